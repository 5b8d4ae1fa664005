"""Two "machines" on 127.0.0.1, each an ``sslterm run`` of its own with its own output
folder (no shared filesystem), through the real CLI and ``accelerate launch``: stop and
``sslterm resume`` on each, and a rank killed mid-epoch (issue 23)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from faulthelpers import (
    assert_whole_log,
    cli,
    events,
    kill_leftovers,
    newest,
    one_line_error,
    overrides_for,
    processes,
    resume,
    start,
    wait_ended,
    wait_for,
    wait_gone,
    wait_step,
)
from safetensors.torch import load_file

from sslterm.runs.launcher import free_port
from sslterm.runs.store import RunDir

pytestmark = pytest.mark.slow

EPOCHS, SPE = 2, 4
PACED = {"SSLTERM_FAULT_STEP_SLEEP": "0.5"}  # the stop lands before the run ends


def machines(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None,
             ) -> tuple[Path, Path]:
    """Machine 0 and machine 1 of one run, each with its own output folder."""
    port = str(free_port())
    return tuple(start(tmp_path / f"machine{rank}", *overrides_for(EPOCHS, SPE), *overrides,
                       "--num-machines", "2", "--machine-rank", str(rank),
                       "--main-process-ip", "127.0.0.1", "--main-process-port", port, env=env)
                 for rank in (0, 1))


def weights(run: Path) -> dict:
    found = newest(run)
    assert found is not None, run
    return load_file(run / "checkpoints" / found[0] / "model.safetensors")


def test_stop_and_resume_on_each_machine(tmp_path: Path) -> None:
    """Stopped on machine 0, resumed on each: first with machine 1's profile changed (the
    ranks disagree on the position: one line, no hang), then as it was, with machine 1's
    checkpoints gone; every epoch once, and the same weights on both."""
    run0, run1 = machines(tmp_path, env=PACED)
    try:
        wait_step(run0, 2, starts=1)
        res = cli(run0.parent, "stop", run0.name, "--wait")
        assert res.returncode == 0, res.stdout + res.stderr
        assert (wait_ended(run0), wait_ended(run1)) == ("stopped", "stopped")
        at = events(run0)[-1]["step"]
        assert 2 <= at < EPOCHS * SPE, at
        assert newest(run0) == newest(run1)  # machine 1 keeps a copy of its own

        resume(run0)
        resume(run1, f"train.max_steps_per_epoch={SPE - 1}")  # another epoch length
        assert (wait_ended(run0), wait_ended(run1)) == ("failed", "failed")
        one_line_error(run0, "ranks disagree on where to resume", "rank 1 at epoch")

        # machine 1 lost its copy (a replaced disk): it receives rank 0's state instead
        shutil.rmtree(run1 / "checkpoints")
        resume(run0)
        resume(run1, f"train.max_steps_per_epoch={SPE}")
        assert (wait_ended(run0), wait_ended(run1)) == ("finished", "finished"), (
            RunDir(run0).read_status(), RunDir(run1).read_status())
        wait_gone(run0)
        wait_gone(run1)
        for run in (run0, run1):
            assert RunDir(run).read_status()["exit_code"] == 0
            starts = [e for e in assert_whole_log(run, EPOCHS, SPE) if e["kind"] == "run_started"]
            assert [s["start_step"] for s in starts] == [0, at]
        log = (run0 / "stdout.log").read_text()
        assert "rank(s) 1 had no copy of checkpoint" in log
        w0, w1 = weights(run0), weights(run1)
        assert w0.keys() == w1.keys() and all((w0[k] == w1[k]).all() for k in w0)
    finally:
        kill_leftovers(run0)
        kill_leftovers(run1)


def trainer_pid(run: Path) -> int | None:
    """The trainer process of a one-process machine (not its supervisor or launcher)."""
    found = [pid for pid, cmd in processes(run) if "sslterm.train" in cmd
             and "accelerate" not in cmd and "supervise" not in cmd]
    return found[0] if len(found) == 1 else None


def test_a_killed_rank_ends_every_rank_with_its_cause_named(tmp_path: Path) -> None:
    """Rank 1 SIGKILLed mid-epoch (the out-of-memory killer): machine 0 has no run directory
    of machine 1 to read, yet its run fails naming rank 1, well within the short timeout."""
    run0, run1 = machines(tmp_path, "launch.collective_timeout=0.5", env=PACED)
    try:
        wait_step(run0, 2, starts=1)
        os.kill(wait_for(lambda: trainer_pid(run1), "rank 1's trainer", run1), signal.SIGKILL)
        killed = time.monotonic()
        assert (wait_ended(run0, timeout=60), wait_ended(run1, timeout=60)) == ("failed", "failed")
        took = time.monotonic() - killed
        assert took < 30, f"the other rank ended {took:.0f} s after the kill"
        error = one_line_error(run0, "rank 1", "stopped without an error record", "killed by a signal")
        print(f"killed rank 1: both machines ended after {took:.1f} s; machine 0: {error!r}")
        failed = [e for e in events(run0) if e["kind"] == "run_failed"]
        assert [e["rank"] for e in failed] == [1], failed
        wait_gone(run0)
        wait_gone(run1)
    finally:
        kill_leftovers(run0)
        kill_leftovers(run1)
