"""``sslterm stop --timeout``: a stop that takes too long escalates to a kill (real
processes: a stand-in supervisor that holds the run's lock, in its own session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runhelpers import start_stand_in

from sslterm.runs.store import RunDir

REPO = Path(__file__).resolve().parents[1]
@pytest.fixture
def stand_in(tmp_path: Path):
    procs: list[subprocess.Popen] = []

    def start(honours_stop: bool) -> tuple[RunDir, subprocess.Popen]:
        run = RunDir(tmp_path / "runs" / f"job-{len(procs)}")
        run.path.mkdir(parents=True)
        run.update_status(state="queued", host=socket.gethostname())
        proc = start_stand_in(run.path, honours_stop)
        procs.append(proc)
        return run, proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def stop(run: RunDir, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sslterm", "-o", str(run.path.parent), "stop", run.id, *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


def test_a_stop_past_its_timeout_is_a_kill(stand_in) -> None:
    run, proc = stand_in(honours_stop=False)
    start = time.monotonic()
    done = stop(run, "--timeout", "1.5")
    assert done.returncode == 1
    assert done.stderr == f"{run.id}: did not stop within 1.5 s: killed\n"
    assert proc.wait(timeout=10) == -9 and time.monotonic() - start >= 1.5
    assert run.state() == ("failed", "killed by the user")


def test_a_stop_within_its_timeout_reports_the_final_state(stand_in) -> None:
    run, proc = stand_in(honours_stop=True)
    done = stop(run, "--timeout", "60")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == f"{run.id}: stopped"
    assert proc.wait(timeout=10) == 0


def test_a_timeout_must_be_positive(stand_in) -> None:
    run, proc = stand_in(honours_stop=True)
    done = stop(run, "--timeout", "0")
    assert done.returncode == 2
    assert done.stderr == "sslterm: stop --timeout: must be > 0 seconds (got 0)\n"
    assert proc.poll() is None and not run.stop_file.exists()  # nothing was asked


def test_a_run_that_ends_the_moment_it_sees_stop_keeps_its_final_state(tmp_path, monkeypatch):
    """The trainer may write its final state as soon as STOP exists: the stop request
    must not overwrite that with "stopping" afterwards."""
    from sslterm.runs import launcher
    from sslterm.runs.store import hold_lock

    run = RunDir(tmp_path / "job")
    run.path.mkdir()
    fd = hold_lock(run)  # alive on this host
    run.update_status(state="running", host=socket.gethostname(), pgid=os.getpgid(0))
    stop_file = run.stop_file

    class EndsAtOnce(type(stop_file)):
        def touch(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            super().touch(*args, **kwargs)
            run.update_status(state="stopped")  # what a fast trainer does on seeing it

    monkeypatch.setattr(RunDir, "stop_file", property(lambda self: EndsAtOnce(stop_file)))
    launcher.request_stop(run)
    assert run.read_status()["state"] == "stopped"
    os.close(fd)


def test_a_stop_after_the_run_ended_changes_nothing(tmp_path):
    from sslterm.errors import UserError
    from sslterm.runs import launcher

    run = RunDir(tmp_path / "job")
    run.path.mkdir()
    run.update_status(state="finished", host=socket.gethostname())
    assert run.update_status(state="stopping", when=("running", "stopping")) is None
    assert run.read_status()["state"] == "finished"
    with pytest.raises(UserError, match="is not running"):
        launcher.request_stop(run)
    assert run.read_status()["state"] == "finished" and not run.stop_file.exists()
