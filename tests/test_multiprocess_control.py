"""Two real processes (``accelerate launch --multi_gpu --num_processes 2``, gloo on the
CPU): a stop requested mid-epoch, a SIGKILL and a SIGTERM to the run's process group, resume
with two processes, and a failure raised on rank 1 only (issue 6 and issue 7).

The first four tests share one run directory and run in file order.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faulthelpers import (
    assert_whole_log,
    cli,
    ended,
    events,
    kill_leftovers,
    newest,
    one_line_error,
    overrides_for,
    partial_checkpoints,
    resume,
    signal_group,
    since_start,
    start,
    wait_ended,
    wait_for,
    wait_gone,
    wait_step,
)

from sslterm.runs.checkpoints import checkpoint_name
from sslterm.runs.store import RunDir

pytestmark = pytest.mark.slow

EPOCHS, SPE = 3, 8
TWO = "launch.num_processes=2"
# one second a step where it matters: `sslterm stop` (a new Python process) lands mid-epoch,
# and ranks orphaned by a SIGKILL would still be training long after it, however fast the
# machine
PACED = {"SSLTERM_FAULT_STEP_SLEEP": "1"}


@dataclass
class Shared:
    out: Path
    run: Path | None = None
    start_steps: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    s = Shared(tmp_path_factory.mktemp("two") / "runs")
    yield s
    if s.run is not None:
        kill_leftovers(s.run)


def _started(s: Shared) -> dict:
    assert s.run is not None, "an earlier test of this module failed"
    launch = len(s.start_steps) + 1
    evs = wait_for(lambda: since_start(s.run, launch), f"launch {launch}", s.run)
    started = evs[0]
    assert started["world_size"] == 2
    s.start_steps.append(started["start_step"])
    return started


def test_stop_mid_epoch_stops_both_ranks_with_one_checkpoint(shared: Shared) -> None:
    shared.run = run = start(shared.out, *overrides_for(EPOCHS, SPE), TWO, env=PACED)
    assert _started(shared)["resumed"] is False
    wait_step(run, 2, starts=1)
    assert newest(run) is None and partial_checkpoints(run) == []
    res = cli(shared.out, "stop", run.name, "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{run.name}: stopped" in res.stdout
    wait_gone(run, timeout=30)  # both ranks, the launcher and the supervisor exited
    assert ended(run) == "stopped"
    last = events(run)[-1]
    assert last["kind"] == "run_stopped", last
    at = last["step"]
    assert 2 <= at < SPE, f"stop landed at step {at}, not mid-epoch 0"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == [checkpoint_name(at)]  # exactly one, complete, nothing torn
    state = json.loads((run / "checkpoints" / ckpts[0] / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["world_size"]) == (0, at, 2)
    assert (run / "checkpoints" / ckpts[0] / "random_states_1.pkl").exists()


def test_sigkill_of_the_process_group_leaves_no_rank_behind(shared: Shared) -> None:
    run = shared.run
    assert run is not None
    stopped_at = newest(run)
    assert stopped_at is not None
    resume(run, env=PACED)
    started = _started(shared)
    assert started["resumed"] is True and started["start_step"] == stopped_at[1]
    wait_step(run, stopped_at[1] + 1, starts=2)
    signal_group(run, signal.SIGKILL)  # supervisor, accelerate launch; torchrun's ranks
    wait_gone(run, timeout=10)  # live in sessions of their own
    assert events(run)[-1]["kind"] == "step"  # killed mid-epoch, nothing after
    assert ended(run) == "failed"


def test_sigterm_with_two_processes_stops_both_ranks_with_a_checkpoint(shared: Shared) -> None:
    """What a scheduler sends: torchrun's agent passes it on to the ranks, which stop."""
    run = shared.run
    assert run is not None
    kept = newest(run)
    assert kept is not None
    resume(run, env=PACED)
    assert _started(shared)["start_step"] == kept[1]
    wait_step(run, kept[1] + 1, starts=3)
    sent = time.monotonic()
    signal_group(run, signal.SIGTERM)
    wait_gone(run, timeout=60)
    took = time.monotonic() - sent
    assert took < 30, f"SIGTERM to exit took {took:.1f} s"
    assert ended(run) == "stopped", RunDir(run).read_status()
    last = events(run)[-1]
    assert last["kind"] == "run_stopped", last
    assert newest(run) == (checkpoint_name(last["step"]), last["step"])
    print(f"2 processes, SIGTERM: checkpoint at step {last['step']}, gone after {took:.1f} s")


def test_resume_with_two_processes_continues_the_event_log(shared: Shared) -> None:
    run = shared.run
    assert run is not None
    kept = newest(run)
    assert kept is not None
    resume(run)
    assert _started(shared)["start_step"] == kept[1]
    assert wait_ended(run) == "finished", RunDir(run).read_status()
    wait_gone(run)
    evs = assert_whole_log(run, EPOCHS, SPE)
    starts = [e for e in evs if e["kind"] == "run_started"]
    assert [s["resumed"] for s in starts] == [False, True, True, True]
    assert [s["start_step"] for s in starts] == shared.start_steps


def test_failure_on_rank_1_fails_the_run_with_its_error(tmp_path: Path) -> None:
    run = start(tmp_path / "runs", *overrides_for(EPOCHS, SPE), TWO,
                env={"SSLTERM_FAULT_RAISE_ON_RANK": "1", "SSLTERM_FAULT_RAISE_AT_STEP": "2"})
    try:
        assert wait_ended(run) == "failed", RunDir(run).read_status()
        wait_gone(run, timeout=15)  # the supervisor, accelerate launch and both ranks
        error = one_line_error(run, "rank 1", "injected fault on rank 1 at step 2")
        assert json.loads((run / "error-rank1.json").read_text())["rank"] == 1
        failed = [e for e in events(run) if e["kind"] == "run_failed"]
        assert len(failed) == 1, failed
        # written by rank 0, which only saw its connection to rank 1 break: the root cause
        assert failed[0]["rank"] == 1 and "injected fault" in failed[0]["error"], failed[0]
        print(f"rank 1 failure -> status.json error: {error!r}; run_failed event: "
              f"rank {failed[0]['rank']}: {failed[0]['error']!r}")
    finally:
        kill_leftovers(run)
