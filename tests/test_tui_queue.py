"""The on-disk run queue and its runner loop (the launcher replaced by a stand-in)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from sslterm.errors import ProfileError, UserError
from sslterm.runs import launcher, queue
from sslterm.runs.store import RunDir, hold_lock

SMOKE = (Path(__file__).resolve().parents[1] / "profiles" / "smoke.toml").read_text()


@pytest.fixture
def fake_start(monkeypatch):
    """start_item creates a finished run directory; 'bad' profiles fail to start."""
    started: list[str] = []

    def start_item(item, out):
        if item.stem == "bad":
            raise UserError("bad.toml:3: data.root: no such folder")
        started.append(item.stem)
        run = RunDir(Path(out) / f"{item.stem}-{len(started)}")
        run.path.mkdir()
        run.update_status(state="finished", host=socket.gethostname())
        return run

    monkeypatch.setattr(queue, "start_item", start_item)
    monkeypatch.setattr(launcher, "wait_started", lambda run, timeout=0: None)
    return started


def test_enqueue_refuses_a_broken_profile(tmp_path):
    with pytest.raises(ProfileError) as err:
        queue.enqueue(tmp_path, "[train]\nepochs = 0\n", "x", start_runner=False)
    assert "train.epochs" in str(err.value)
    assert queue.pending(tmp_path) == []


def test_runner_takes_items_in_order_and_records_failures(tmp_path, fake_start):
    for stem in ("first", "bad", "second"):
        queue.enqueue(tmp_path, SMOKE, stem, source=f"{stem}.toml", start_runner=False)
    assert [i.stem for i in queue.pending(tmp_path)] == ["first", "bad", "second"]
    assert queue.run_queue(tmp_path, poll=0.01) == 0
    assert fake_start == ["first", "second"]
    assert queue.pending(tmp_path) == []
    hist = queue.history(tmp_path)
    assert [(h["stem"], h["run"]) for h in hist] == [
        ("first", "first-1"),
        ("bad", None),
        ("second", "second-2"),
    ]
    assert "no such folder" in hist[1]["error"]


def test_runner_waits_while_a_run_is_active(tmp_path, fake_start):
    run = RunDir(tmp_path / "manual-1")
    run.path.mkdir()
    fd = hold_lock(run)  # a run of this host, alive
    run.update_status(state="running", host=socket.gethostname(), pid=os.getpid())
    queue.enqueue(tmp_path, SMOKE, "next", start_runner=False)
    worker = threading.Thread(target=queue.run_queue, args=(tmp_path, 0.02))
    worker.start()
    try:
        time.sleep(0.5)
        assert fake_start == [] and len(queue.pending(tmp_path)) == 1
        assert queue.runner_alive(tmp_path)
        assert queue.run_queue(tmp_path) == 0  # a second runner leaves at once
    finally:
        run.update_status(state="finished")
        os.close(fd)
        worker.join(timeout=30)
    assert fake_start == ["next"] and not queue.runner_alive(tmp_path)


def test_remove_and_item_file_format(tmp_path):
    item = queue.enqueue(tmp_path, SMOKE, "smoke", ["train.epochs=1"], source="p/smoke.toml",
                         start_runner=False)  # fmt: skip
    data = json.loads(item.path.read_text())
    assert data["text"] == SMOKE and data["overrides"] == ["train.epochs=1"]
    assert data["cwd"] == os.getcwd()
    assert queue.remove(item) and not queue.remove(item)


def test_start_checked_reports_the_cli_error(tmp_path):
    """The checked start runs in a child process; a profile error comes back intact."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_size = 1\n")
    with pytest.raises(ProfileError) as err:
        queue.start_checked(bad, tmp_path / "runs")
    assert str(err.value).startswith(f"{bad}:2: train.batch_size:")
    assert err.value.key == "train.batch_size" and err.value.line == 2
    assert not (tmp_path / "runs").exists()


def test_move_reorders_and_the_runner_follows_the_new_order(tmp_path, fake_start):
    for stem in ("a", "b", "c", "d"):
        queue.enqueue(tmp_path, SMOKE, stem, start_runner=False)
    stems = lambda: [i.stem for i in queue.pending(tmp_path)]  # noqa: E731
    items = {i.stem: i for i in queue.pending(tmp_path)}
    moved = queue.move(items["c"], -1)
    assert stems() == ["a", "c", "b", "d"] and moved.stem == "c" and moved.text == SMOKE
    moved = queue.move(moved, -5)  # clamped to the front
    assert stems() == ["c", "a", "b", "d"]
    queue.move(queue.pending(tmp_path)[1], 10)  # "a" to the back
    assert stems() == ["c", "b", "d", "a"]
    assert queue.move(queue.pending(tmp_path)[0], -1).stem == "c"  # already first: stays
    assert stems() == ["c", "b", "d", "a"]
    gone = queue.pending(tmp_path)[2]
    assert queue.remove(gone) and queue.move(gone, -1) is None  # taken meanwhile
    assert queue.run_queue(tmp_path, poll=0.01) == 0
    assert fake_start == ["c", "b", "a"]
