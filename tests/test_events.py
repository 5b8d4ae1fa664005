import json
import os
import subprocess
import sys

from sslterm.runs.events import (
    EventReader,
    EventWriter,
    read_events,
    repair_tail,
    truncate_after_checkpoint,
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
    assert all(e["v"] == 1 and "t" in e for e in read_events(tmp_path))


def test_repair_tail_cuts_only_the_partial_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"kind":"log"}\n{"kind":"lo')
    assert repair_tail(path) == len(b'{"kind":"lo')
    assert path.read_bytes() == b'{"kind":"log"}\n'
    assert repair_tail(path) == 0


def test_reader_restarts_when_file_is_replaced(tmp_path):
    w = EventWriter(tmp_path)
    for s in range(5):
        w.emit("step", epoch=0, step=s)
    w.emit("checkpoint", epoch=1, step=4, path="checkpoints/step-000000004")
    w.emit("step", epoch=1, step=5)
    w.emit("log", level="info", message="kept")
    w.close()
    reader = EventReader(tmp_path / "events.jsonl")
    assert len(reader.read_new()) == 8
    assert truncate_after_checkpoint(tmp_path, "step-000000004") == 1
    events = reader.read_new()
    assert reader.restarts == 1
    assert [e["kind"] for e in events] == ["step"] * 5 + ["checkpoint", "log"]


def test_truncate_without_checkpoint_drops_all_progress(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("run_started", epochs=3)
    w.emit("step", epoch=0, step=1)
    w.emit("run_failed", error="boom")
    w.close()
    truncate_after_checkpoint(tmp_path, None)
    assert [e["kind"] for e in read_events(tmp_path)] == ["run_started", "run_failed"]


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
