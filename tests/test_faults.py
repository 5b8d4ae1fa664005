"""Fault injection with real processes and real signals (issue 7: kills, SIGTERM,
non-finite loss, full disk, concurrency, determinism).

The kill-chain tests share one run directory and must run in file order: each
kills the launch that the one before resumed. Kill points: SIGKILL to the
run's process group mid-step, mid-checkpoint write (between the ``.tmp-``
folder's write and its commit, widened by ``SSLTERM_FAULT_SLEEP_BEFORE_COMMIT``),
right after a commit (before its ``checkpoint`` event, widened by
``SSLTERM_FAULT_SLEEP_AFTER_COMMIT``), then SIGTERM. The last test resumes the
run to its end and checks that nothing was lost beyond the last checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faulthelpers import (
    TINY,
    assert_whole_log,
    cli,
    cli_bg,
    ended,
    events,
    kill_leftovers,
    newest,
    one_line_error,
    overrides_for,
    partial_checkpoints,
    processes,
    resume,
    signal_group,
    since_start,
    start,
    step_losses,
    wait_ended,
    wait_for,
    wait_gone,
    wait_step,
)
from runhelpers import SMOKE
from safetensors.torch import load_file

from sslterm.runs import store
from sslterm.runs.checkpoints import TMP_PREFIX, checkpoint_name
from sslterm.runs.events import EventReader, EventWriter, append_resumed, read_events
from sslterm.runs.store import RunDir

pytestmark = pytest.mark.slow

EPOCHS, SPE = 4, 3  # 12 steps; checkpoints at steps 3, 6, 9, 12
HOLD = "120"  # seconds a fault hook sleeps: far longer than any wait below
# half a second a step where a signal must land at a given point, however fast the machine
PACED = {"SSLTERM_FAULT_STEP_SLEEP": "0.5"}


@dataclass
class Chain:
    out: Path
    run: Path | None = None
    launches: int = 0
    kills: list[dict] = field(default_factory=list)  # point, steps done, checkpoint step

    def launched(self) -> Path:
        assert self.run is not None, "an earlier kill-chain test failed"
        self.launches += 1
        return self.run


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    c = Chain(tmp_path_factory.mktemp("chain") / "runs")
    yield c
    if c.run is not None:
        kill_leftovers(c.run)


def _kill(c: Chain, point: str, done: int) -> tuple[str, int] | None:
    """SIGKILL the run's process group; check nothing lives and nothing lies afterwards."""
    run = c.run
    assert run is not None
    signal_group(run, signal.SIGKILL)
    wait_gone(run, timeout=30)
    assert ended(run) == "failed", RunDir(run).state()  # never "running"
    kept = newest(run)
    c.kills.append({"point": point, "done": done, "checkpoint": kept[1] if kept else 0})
    return kept


def _resumed_from(c: Chain) -> int:
    """Wait for the new launch's run_started; check it continues from the newest checkpoint."""
    run = c.launched()
    evs = wait_for(lambda: since_start(run, c.launches), f"launch {c.launches}", run)
    started = evs[0]
    assert started["resumed"] is True
    assert started["start_step"] == c.kills[-1]["checkpoint"], (started, c.kills[-1])
    return started["start_step"]


def test_sigkill_mid_step(chain: Chain) -> None:
    chain.run = start(chain.out, *overrides_for(EPOCHS, SPE), env=PACED)
    run = chain.launched()
    evs = wait_step(run, SPE + 1, starts=1)  # a step of epoch 1: checkpoint step 3 is committed
    done = max(e["step"] for e in evs if e["kind"] == "step")
    assert _kill(chain, "mid-step", done) == (checkpoint_name(SPE), SPE)
    listing = cli(chain.out, "runs")
    row = next(line for line in listing.stdout.splitlines() if run.name in line)
    assert "failed" in row and "running" not in row, listing.stdout
    # a torn last line, as a writer killed mid-write leaves it: readers skip it
    before = events(run)
    with open(run / "events.jsonl", "ab") as fh:
        fh.write(b'{"v":1,"kind":"step","t":1795000000.0,"epoch":1,"st')
    reader = EventReader(run / "events.jsonl")
    assert reader.read_new() == before and reader.skipped == 0


def test_sigkill_mid_checkpoint_write(chain: Chain) -> None:
    run = chain.run
    assert run is not None
    resume(run, env={"SSLTERM_FAULT_SLEEP_BEFORE_COMMIT": HOLD})
    _resumed_from(chain)
    # the resumed trainer cut the torn line before appending: every line parses again
    assert all(line.startswith(b"{") and line.endswith(b"}")
               for line in (run / "events.jsonl").read_bytes().splitlines())
    tmp = run / "checkpoints" / f"{TMP_PREFIX}{checkpoint_name(2 * SPE)}"
    wait_for(lambda: (tmp / "random_states_0.pkl").exists(), "the .tmp- checkpoint", run)
    assert _kill(chain, "mid-checkpoint write", 2 * SPE) == (checkpoint_name(SPE), SPE)
    assert partial_checkpoints(run) == [tmp.name]  # torn, left behind, never picked


def test_sigkill_right_after_commit(chain: Chain) -> None:
    run = chain.run
    assert run is not None
    resume(run, env={"SSLTERM_FAULT_SLEEP_AFTER_COMMIT": HOLD})
    _resumed_from(chain)
    committed = run / "checkpoints" / checkpoint_name(2 * SPE)
    wait_for(lambda: (committed / "COMPLETE").exists(), "the commit of step 6", run)
    assert partial_checkpoints(run) == []  # the resume removed the torn one
    assert _kill(chain, "right after a commit", 2 * SPE) == (committed.name, 2 * SPE)


def test_sigterm_checkpoints_and_exits_within_30s(chain: Chain) -> None:
    run = chain.run
    assert run is not None
    resume(run, env=PACED)
    _resumed_from(chain)
    # step 8 is logged after its pause: the stop lands on step 9, the last of epoch 2
    wait_step(run, 2 * SPE + 2, starts=chain.launches)
    sent = time.monotonic()
    signal_group(run, signal.SIGTERM)
    wait_for(lambda: not processes(run) and ended(run), "the run to exit after SIGTERM", run,
             timeout=60)
    took = time.monotonic() - sent
    assert took < 30, f"SIGTERM to exit took {took:.1f} s"
    assert ended(run) == "stopped", RunDir(run).read_status()
    last = events(run)[-1]
    assert last["kind"] == "run_stopped", last
    stopped_at = last["step"]
    assert newest(run) == (checkpoint_name(stopped_at), stopped_at)
    assert last["checkpoint"] == f"checkpoints/{checkpoint_name(stopped_at)}"
    chain.kills.append({"point": "SIGTERM", "done": stopped_at, "checkpoint": stopped_at})
    print(f"SIGTERM: checkpoint at step {stopped_at}, all processes gone after {took:.1f} s")


def test_resume_after_the_kills_finishes_with_a_whole_log(chain: Chain) -> None:
    run = chain.run
    assert run is not None
    # two resumes at once: the lock lets exactly one trainer run
    racers = [cli_bg(run.parent, "resume", run.name, "--detach") for _ in range(2)]
    codes = [p.wait(timeout=120) for p in racers]
    errors = [p.stderr.read() if p.stderr else "" for p in racers]
    assert sorted(codes) in ([0, 0], [0, 2]), (codes, errors)
    _resumed_from(chain)
    assert wait_ended(run) == "finished", RunDir(run).read_status()
    wait_gone(run)
    evs = assert_whole_log(run, EPOCHS, SPE)
    starts = [e for e in evs if e["kind"] == "run_started"]
    assert len(starts) == chain.launches == 5, [s["start_step"] for s in starts]
    assert [s["start_step"] for s in starts] == [0] + [k["checkpoint"] for k in chain.kills]
    lost_beyond = [k["checkpoint"] - s["start_step"] for k, s in zip(chain.kills, starts[1:], strict=True)]
    assert lost_beyond == [0] * len(chain.kills)
    redone = {k["point"]: k["done"] - k["checkpoint"] for k in chain.kills}
    print(f"kill points: {len(chain.kills)} ({', '.join(redone)}); steps redone after each: "
          f"{redone}; lost beyond the last checkpoint: {sum(lost_beyond)} steps, 0 epochs; "
          f"every one of {EPOCHS} epochs and {EPOCHS * SPE} steps logged exactly once")


def test_resume_keeps_progress_of_a_checkpoint_whose_event_was_never_written(
    tmp_path: Path,
) -> None:
    """The unit behind test_sigkill_right_after_commit: the log up to the checkpoint stays."""
    w = EventWriter(tmp_path)
    for step in (1, 2, 3):
        w.emit("step", epoch=0, step=step, loss=1.0)
    w.emit("epoch", epoch=0, step=3, loss=1.0)  # step-3 committed, then killed: no event
    w.emit("log", level="info", message="kept")
    w.emit("step", epoch=1, step=4, loss=1.0)
    w.close()
    append_resumed(tmp_path, 0, 3, f"checkpoints/{checkpoint_name(3)}")
    assert [(e["kind"], e.get("step")) for e in read_events(tmp_path)] == [
        ("step", 1), ("step", 2), ("step", 3), ("epoch", 3), ("log", None), ("run_resumed", 3)]


# -- full disk, then a non-finite loss ---------------------------------------------------
def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _assert_complete(folder: Path) -> None:
    for name in ("COMPLETE", "state.json", "model.safetensors", "optimizer.bin",
                 "random_states_0.pkl"):
        assert (folder / name).is_file(), name
    assert any(k.startswith("encoder.") for k in load_file(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def enospc_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run whose second checkpoint (step 6) fails with ENOSPC (injected at the write)."""
    run = start(tmp_path_factory.mktemp("enospc") / "runs", *overrides_for(3, SPE),
                env={"SSLTERM_FAULT_ENOSPC_AT_STEP": str(2 * SPE)})
    try:
        yield run
    finally:
        kill_leftovers(run)


def test_enospc_at_checkpoint_keeps_the_previous_one_and_fails_with_the_reason(
    enospc_run: Path,
) -> None:
    run = enospc_run
    assert wait_ended(run) == "failed", RunDir(run).read_status()
    wait_gone(run)
    one_line_error(run, os.strerror(errno.ENOSPC))
    assert newest(run) == (checkpoint_name(SPE), SPE)
    _assert_complete(run / "checkpoints" / checkpoint_name(SPE))
    assert events(run)[-1]["kind"] == "run_failed"
    listing = cli(run.parent, "runs")
    row = next(line for line in listing.stdout.splitlines() if run.name in line)
    assert "failed" in row and "space" in listing.stdout.lower(), listing.stdout  # (wrapped)


def test_nonfinite_loss_fails_clearly_and_keeps_the_last_good_checkpoint(enospc_run: Path) -> None:
    run = enospc_run
    assert wait_ended(run) == "failed"
    good = run / "checkpoints" / checkpoint_name(SPE)
    before = _digest(good)
    resume(run, "train.base_lr=1e30")  # from step 3, at the peak lr: diverges at once
    assert wait_ended(run) == "failed", RunDir(run).read_status()
    wait_gone(run)
    error = one_line_error(run, "loss became")
    assert "nan" in error or "inf" in error, error
    last = events(run)[-1]
    assert last["kind"] == "run_failed" and "loss became" in last["error"], last
    assert newest(run) == (good.name, SPE)
    assert _digest(good) == before
    _assert_complete(good)


def test_real_full_disk_on_a_small_tmpfs(tmp_path: Path) -> None:
    """The run directory on a 16 MiB tmpfs that another writer fills after the first
    checkpoint, leaving 2.5 MiB: the next checkpoint's model (1.5 MiB) fits, its optimizer
    state does not, and the disk is left 100 % full."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    run = None
    try:
        run = start(mnt / "runs", *overrides_for(3, SPE), env={"SSLTERM_FAULT_STEP_SLEEP": "0.3"})
        wait_for(lambda: any(e["kind"] == "checkpoint" for e in events(run)),
                 "the first checkpoint", run)
        fs = os.statvfs(mnt)
        (mnt / "ballast").write_bytes(bytes(fs.f_bavail * fs.f_frsize - 5 * 2**19))
        assert wait_ended(run) == "failed", RunDir(run).read_status()
        wait_gone(run)
        error = one_line_error(run, "space")
        print(f"full tmpfs -> status.json error: {error!r}")
        assert newest(run) == (checkpoint_name(SPE), SPE)
        _assert_complete(run / "checkpoints" / checkpoint_name(SPE))
    finally:
        if run is not None:
            kill_leftovers(run)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -- concurrency and determinism --------------------------------------------------------
@dataclass
class Pair:
    runs: list[Path]
    refused: subprocess.CompletedProcess[str]
    followers: list[tuple[int, str]]
    pid_before: int | None
    pid_after: int | None


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two runs of the same profile and seed started at once, followed twice, resumed once
    while running."""
    out = tmp_path_factory.mktemp("pair") / "runs"
    out.mkdir()
    starters = [cli_bg(out, "run", str(SMOKE), *TINY, *overrides_for(1, 4), "--detach") for _ in range(2)]
    ids = []
    for p in starters:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stdout + stderr
        ids.append(stdout.strip().splitlines()[-1])
    runs = [out / i for i in ids]
    try:
        a = runs[0]
        wait_for(lambda: RunDir(a).is_locked() and RunDir(a).state()[0] == "running",
                 "run a to take its lock", a)
        followers = [cli_bg(out, "follow", a.name) for _ in range(2)]
        pid_before = RunDir(a).read_status().get("pid")
        refused = cli(out, "resume", a.name)
        pid_after = RunDir(a).read_status().get("pid")
        outputs = []
        for f in followers:
            stdout, stderr = f.communicate(timeout=300)
            outputs.append((f.returncode, stdout + stderr))
        for r in runs:
            wait_ended(r)
        yield Pair(runs, refused, outputs, pid_before, pid_after)
    finally:
        for r in runs:
            kill_leftovers(r)


def test_runs_started_at_once_get_distinct_directories(pair: Pair) -> None:
    assert len({r.name for r in pair.runs}) == 2
    assert all(ended(r) == "finished" for r in pair.runs), [RunDir(r).state() for r in pair.runs]


def test_run_dirs_created_in_the_same_second_are_distinct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.time, "strftime", lambda *_: "20260101-000000")
    made: list[str] = []
    barrier = threading.Barrier(8)

    def make() -> None:
        barrier.wait()
        made.append(store.new_run_dir(tmp_path, "smoke").id)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == sorted(["smoke-20260101-000000"]
                                  + [f"smoke-20260101-000000-{n}" for n in range(1, 8)])


def test_resume_of_a_running_run_is_refused_by_the_lock(pair: Pair) -> None:
    res = pair.refused
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "already running" in lines[0] and "Traceback" not in res.stderr
    assert pair.pid_before == pair.pid_after  # no second supervisor took over the status
    starts = [e for e in events(pair.runs[0]) if e["kind"] == "run_started"]
    assert len(starts) == 1


def test_two_followers_both_see_the_run_finish(pair: Pair) -> None:
    for code, output in pair.followers:
        assert code == 0, output
        assert f"run {pair.runs[0].name} finished" in output, output


def test_same_profile_and_seed_give_the_same_losses(pair: Pair) -> None:
    a, b = (step_losses(r) for r in pair.runs)
    assert len(a) == len(b) == 4
    assert a == b  # bit for bit on the CPU
    assert a[0] != a[-1]  # training moved: not vacuous
