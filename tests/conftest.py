"""Fixtures shared by the test modules (helpers that are plain functions live in
runhelpers, faulthelpers, fakedata and tuihelpers)."""

from __future__ import annotations

import os
import time

import pytest

# The runs the tests start take their OpenMP thread count from OMP_NUM_THREADS, by default
# all cores per process (sslterm.runs.launcher): with pytest-xdist's workers sharing those
# cores, a run's threads wait on descheduled peers at every small op (a smoke epoch: under
# 1 s alone, 5-10 s oversubscribed). Each worker gets its share, as do its in-process tests.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


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


@pytest.fixture
def profiles_dir(tmp_path):
    """A profiles folder holding the app tests' smoke profile (test files may override it)."""
    from tuihelpers import SMOKE

    d = tmp_path / "profiles"
    d.mkdir()
    (d / "smoke.toml").write_text(SMOKE)
    return d
