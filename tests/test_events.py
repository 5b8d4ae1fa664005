import json
import os
import subprocess
import sys

from sslterm.runs.events import (
    SCHEMA_VERSION,
    EventReader,
    EventWriter,
    append_resumed,
    current,
    read_events,
    repair_tail,
)
from sslterm.runs.store import RunDir, hold_lock, new_run_dir


def test_reader_is_incremental_and_skips_torn_tail(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("step", epoch=0, step=1, loss=1.0)
    reader = EventReader(tmp_path / "events.jsonl")
    assert [e["step"] for e in reader.read_new()] == [1]
    assert reader.read_new() == []
    with open(tmp_path / "events.jsonl", "a") as fh:
        fh.write('{"v":1,"kind":"step","ep')  # torn write
    assert reader.read_new() == []
    offset = reader.offset
    # a new writer (the resumed trainer) repairs the tail, then appends
    w2 = EventWriter(tmp_path)
    w2.emit("step", epoch=0, step=2, loss=float("nan"))
    events = reader.read_new()
    assert reader.offset > offset
    assert [(e["step"], e["loss"]) for e in events] == [(2, None)]
    assert all(e["v"] == SCHEMA_VERSION and "t" in e for e in read_events(tmp_path))


def test_repair_tail_cuts_only_the_partial_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"kind":"log"}\n{"kind":"lo')
    assert repair_tail(path) == len(b'{"kind":"lo')
    assert path.read_bytes() == b'{"kind":"log"}\n'
    assert repair_tail(path) == 0


def _killed_after_checkpoint(run_dir):
    """A log as a trainer killed one step after its step-4 checkpoint leaves it."""
    w = EventWriter(run_dir)
    w.emit("run_started", epochs=3, resumed=False)
    for s in range(1, 5):
        w.emit("step", epoch=0, step=s)
    w.emit("checkpoint", epoch=1, step=4, path="checkpoints/step-000000004")
    w.emit("step", epoch=1, step=5)
    w.emit("log", level="info", message="kept")
    w.close()


def test_a_resume_appends_and_a_reader_never_starts_over(tmp_path):
    _killed_after_checkpoint(tmp_path)
    reader = EventReader(tmp_path / "events.jsonl")
    assert len(reader.read_new()) == 8
    before = (tmp_path / "events.jsonl").read_bytes()
    resumed = append_resumed(tmp_path, 1, 4, "checkpoints/step-000000004")
    assert (tmp_path / "events.jsonl").read_bytes().startswith(before)  # nothing rewritten
    assert reader.read_new() == [resumed] and reader.restarts == 0
    assert resumed["kind"] == "run_resumed" and resumed["step"] == 4


def test_run_resumed_supersedes_the_progress_past_its_step(tmp_path):
    _killed_after_checkpoint(tmp_path)
    append_resumed(tmp_path, 1, 4, "checkpoints/step-000000004")
    w = EventWriter(tmp_path)
    w.emit("run_started", epochs=3, resumed=True)
    w.emit("step", epoch=1, step=5)
    w.close()
    assert [(e["kind"], e.get("step")) for e in read_events(tmp_path)] == [
        ("run_started", None), ("step", 1), ("step", 2), ("step", 3), ("step", 4),
        ("checkpoint", 4), ("log", None), ("run_resumed", 4), ("run_started", None), ("step", 5)]


def test_a_resume_without_checkpoint_supersedes_all_progress(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("run_started", epochs=3)
    w.emit("step", epoch=0, step=1)
    w.emit("run_failed", error="boom")
    w.close()
    append_resumed(tmp_path, 0, 0, None)
    assert [e["kind"] for e in read_events(tmp_path)] == ["run_started", "run_failed", "run_resumed"]
    assert append_resumed(tmp_path / "fresh", 0, 0, None) is None  # a first launch: no record


def test_current_applies_every_resume_in_turn():
    log = [{"kind": "step", "step": s} for s in (1, 2, 3)]
    log += [{"kind": "run_resumed", "step": 1}, {"kind": "step", "step": 2},
            {"kind": "run_resumed", "step": 2}, {"kind": "step", "step": 3}]
    assert [(e["kind"], e["step"]) for e in current(log)] == [
        ("step", 1), ("run_resumed", 1), ("step", 2), ("run_resumed", 2), ("step", 3)]


def test_run_dirs_in_the_same_second_are_distinct(tmp_path):
    dirs = {new_run_dir(tmp_path, "p").id for _ in range(5)}
    assert len(dirs) == 5


def test_lock_decides_liveness(tmp_path):
    run = RunDir(tmp_path)
    run.update_status(state="running", pid=os.getpid(), host=os.uname().nodename)
    assert run.state()[0] == "failed"  # nobody holds the lock: the trainer died
    code = ("import sys,time; from sslterm.runs.store import RunDir, hold_lock; "
            "hold_lock(RunDir(sys.argv[1])); print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run.is_locked()
        assert run.state()[0] == "running"
        try:
            hold_lock(run)
            raise AssertionError("a second trainer took the lock")
        except Exception as exc:
            assert "already running" in str(exc)
    finally:
        holder.kill()
        holder.wait()
    assert not run.is_locked()
    assert json.loads(run.status_file.read_text())["state"] == "running"
    assert run.state()[0] == "failed"
