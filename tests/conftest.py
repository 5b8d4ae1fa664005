"""Fixtures shared by the test modules (helpers that are plain functions live in
runhelpers, faulthelpers, fakedata and tuihelpers)."""

from __future__ import annotations

import os
import time

import pytest


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared machine, OpenMP threads of small ops wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def utc():
    """Pin local time to UTC (the tables' time columns) for the duration of a test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def runs_dir(tmp_path):
    """A runs folder holding the app tests' fixed runs (finished, failed, stopped)."""
    from tuihelpers import make_runs

    return make_runs(tmp_path / "runs")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
