"""Sweeps: grid expansion and naming, the queue runner's ``parallel`` N, the sweep table in
the CLI and the app, and (slow) a real 2x2 sweep through the real queue and ``accelerate``."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from runhelpers import SMOKE, wait_for

from sslterm.errors import UserError
from sslterm.profile.load import validate_text
from sslterm.report.sweep_table import (
    BEST,
    SweepRow,
    best_index,
    sort_rows,
    sweep_rows,
    table_cells,
)
from sslterm.runs import launcher, queue
from sslterm.runs.events import read_events
from sslterm.runs.store import RunDir, hold_lock
from sslterm.runs.sweep import (
    create_sweep,
    find_sweep,
    finished,
    grid,
    parse_axes,
    point_name,
    split_values,
    sweep_status,
)

REPO = Path(__file__).resolve().parents[1]
RUN_ID = re.compile(r"^[A-Za-z0-9_.-]+-\d{8}-\d{6}(-\d+)?$")


def cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, COLUMNS="120",
                                                               PYTHONUNBUFFERED="1"))


# -- grid and names ------------------------------------------------------------------------
def test_values_split_on_top_level_commas_only() -> None:
    assert split_values("0.1, 0.3,1") == ["0.1", "0.3", "1"]
    assert split_values('[1,2],[3,4],"a,b"') == ["[1,2]", "[3,4]", '"a,b"']


def test_grid_is_every_combination_last_key_fastest() -> None:
    axes = parse_axes(["train.base_lr=0.1,0.3", "train.batch_size=32,64"])
    assert grid(axes) == [
        {"train.base_lr": "0.1", "train.batch_size": "32"},
        {"train.base_lr": "0.1", "train.batch_size": "64"},
        {"train.base_lr": "0.3", "train.batch_size": "32"},
        {"train.base_lr": "0.3", "train.batch_size": "64"},
    ]


@pytest.mark.parametrize("items", [["train.epochs=1,,2"], ["train.epochs"],
                                   ["train.epochs=1,2", "train.epochs=3,4"]])
def test_bad_axes_are_refused(items: list[str]) -> None:
    with pytest.raises(UserError, match="<command line>"):
        parse_axes(items)


def test_point_names_are_valid_profile_names_and_run_ids() -> None:
    name = point_name("smoke", {"train.base_lr": "0.1", "data.root": "/data/my set",
                                "model.encoder": "x" * 120})
    assert name.startswith("smoke-base_lr0.1-root_data_my_set-encoderx")
    assert len(name) == 100
    assert validate_text("", "p.toml", [f"name={json.dumps(name)}"]).name == name


# -- the runner's parallel N ----------------------------------------------------------------
@pytest.fixture
def live_start(monkeypatch):
    """start_item creates a run that stays alive (its lock held) until released."""
    started: list[str] = []
    locks: dict[str, int] = {}

    def start_item(item, out):
        run = RunDir(Path(out) / f"{item.stem}-20260101-000000")
        run.path.mkdir()
        locks[item.stem] = hold_lock(run)
        run.update_status(state="running", host=socket.gethostname(), pid=os.getpid())
        started.append(item.stem)
        return run

    def finish(stem: str, out: Path) -> None:
        RunDir(out / f"{stem}-20260101-000000").update_status(state="finished")
        os.close(locks.pop(stem))

    monkeypatch.setattr(queue, "start_item", start_item)
    monkeypatch.setattr(launcher, "wait_started", lambda run, timeout=0: None)
    yield started, finish
    for fd in locks.values():
        os.close(fd)


def test_the_runner_keeps_parallel_runs_going(tmp_path: Path, live_start) -> None:
    """Before: the runner started an item only when no run was active at all."""
    started, finish = live_start
    text = SMOKE.read_text()
    for stem in ("a", "b", "c"):
        queue.enqueue(tmp_path, text, stem, start_runner=False, parallel=2)
    worker = threading.Thread(target=queue.run_queue, args=(tmp_path, 0.02))
    worker.start()
    try:
        wait_for(lambda: started == ["a", "b"], "two runs at once", tmp_path, timeout=30)
        assert [i.stem for i in queue.pending(tmp_path)] == ["c"]  # a third waits
        finish("b", tmp_path)
        wait_for(lambda: started == ["a", "b", "c"], "the third run", tmp_path, timeout=30)
    finally:
        for stem in ("a", "c"):
            if stem in started:
                finish(stem, tmp_path)
        worker.join(timeout=30)
    assert not worker.is_alive()


# -- sweep status and table -----------------------------------------------------------------
@pytest.fixture
def finished_sweep(tmp_path: Path, monkeypatch):
    """A 2x2 sweep worked by the real runner loop, whose start makes finished runs with the
    results.json the trainer writes (linear eval best at base_lr=0.3, batch 32)."""
    def start_item(item, out):
        run = RunDir(Path(out) / f"{item.stem}-20260101-00000{item.point}")
        run.path.mkdir()
        run.update_status(state="finished", host=socket.gethostname())
        lr = float(re.search(r"base_lr([\d.]+)", item.stem).group(1))
        batch = int(re.search(r"batch_size(\d+)", item.stem).group(1))
        final = {"ssl_train_loss": 5.0 - lr, "ssl_val_loss": 5.5 - lr - batch / 1000,
                 "linear_eval": {"val_top1": 30 + 100 * lr - batch / 8, "test_top1": 20 + 100 * lr - batch / 8},
                 "knn": {"val_top1": 25.0 + batch / 100 - lr}}
        run.results.write_text(json.dumps({"run_id": run.id, "final": final}))
        return run

    monkeypatch.setattr(queue, "start_item", start_item)
    monkeypatch.setattr(launcher, "wait_started", lambda run, timeout=0: None)
    sweep = create_sweep(tmp_path, SMOKE, parse_axes(["train.base_lr=0.1,0.3",
                                                      "train.batch_size=32,64"]),
                         ["train.epochs=1"], start_runner=False)
    assert [p.state for p in sweep_status(sweep, tmp_path)] == ["waiting"] * 4
    queue.run_queue(tmp_path, poll=0.01)
    return sweep, tmp_path


def test_sweep_points_find_their_runs_through_the_queue(finished_sweep) -> None:
    sweep, out = finished_sweep
    points = sweep_status(sweep, out)
    assert finished(points)
    assert [(p.state, p.run.id) for p in points] == [
        ("finished", f"smoke-base_lr{lr}-batch_size{b}-20260101-00000{i}")
        for i, (lr, b) in enumerate([("0.1", 32), ("0.1", 64), ("0.3", 32), ("0.3", 64)])]
    item = json.loads(next(out.glob(".queue/history.jsonl")).read_text().splitlines()[0])
    assert (item["sweep"], item["point"]) == (sweep.id, 0)


def test_points_removed_by_hand_end_the_sweep(finished_sweep, tmp_path: Path) -> None:
    """A point taken out of the queue, or whose run was deleted, no longer holds up the
    headless wait (before: a deleted run read as starting forever)."""
    sweep, out = finished_sweep
    shutil.rmtree(sweep_status(sweep, out)[1].run.path)
    points = sweep_status(sweep, out)
    assert [p.state for p in points] == ["finished", "removed", "finished", "finished"]
    assert finished(points)
    other = tmp_path / "other"
    again = create_sweep(other, SMOKE, parse_axes(["train.epochs=1,2"]), start_runner=False)
    assert queue.remove(queue.pending(other)[0])
    assert [p.state for p in sweep_status(again, other)] == ["removed", "waiting"]
    assert not finished(sweep_status(again, other))


def test_a_tie_marks_the_first_row_best() -> None:
    rows = [SweepRow("a", {}, "finished", "a", {"knn": 1.0}),
            SweepRow("b", {}, "finished", "b", {"knn": 2.0}),
            SweepRow("c", {}, "finished", "c", {"knn": 2.0}), SweepRow("d", {}, "running", "")]
    assert best_index(rows, "knn") == 1
    assert [r.name for r in sort_rows(rows, "knn")] == ["b", "c", "a", "d"]


def test_table_sorts_best_first_and_marks_it(finished_sweep) -> None:
    sweep, out = finished_sweep
    rows = sweep_rows(sweep_status(sweep, out))
    header, cells = table_cells(sweep, rows, "linear")
    assert header[:4] == ["", "train.base_lr", "train.batch_size", "state"]
    assert header[4:6] == ["linear", "knn"] and "ssl_val_loss" in header
    assert [c[1:3] for c in cells] == [["0.3", "32"], ["0.3", "64"], ["0.1", "32"], ["0.1", "64"]]
    assert [c[0] for c in cells] == [BEST, "", "", ""]
    _, by_loss = table_cells(sweep, rows, "ssl_val_loss")  # lower is better
    assert by_loss[0][:3] == [BEST, "0.3", "64"]


def test_sweep_show_prints_the_table(finished_sweep) -> None:
    sweep, out = finished_sweep
    shown = cli("-o", str(out), "sweep", "--show", "--sort", "knn")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].strip() == f"sweep {sweep.id}, sorted by knn"
    marked = [line.split() for line in lines if line.lstrip().startswith(BEST)]
    assert [m[1:4] for m in marked] == [["0.1", "64", "finished"]]
    assert sum(" finished " in line for line in lines) == 4
    bad = cli("-o", str(out), "sweep", "--show", "--sort", "nope")
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "sslterm: --sort nope: no run of the sweep has it (they have: linear, knn, "
        "ssl_train_loss, ssl_val_loss)"]


def test_sweep_view_in_the_app_lists_points_and_sorts_by_key(finished_sweep) -> None:
    import asyncio

    from textual.widgets import DataTable

    from sslterm.tui.app import SSLTermApp

    sweep, out = finished_sweep

    async def scenario() -> None:
        app = SSLTermApp(out, poll_interval=60)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("6")
            table = app.screen.query_one("#sweep-table", DataTable)
            await pilot.pause()
            for _ in range(100):
                if table.row_count == 4:
                    break
                await pilot.pause(0.05)
            rows = [table.get_row_at(i) for i in range(4)]
            assert [r[:3] for r in rows] == [[BEST, "0.3", "32"], ["", "0.3", "64"],
                                             ["", "0.1", "32"], ["", "0.1", "64"]]
            assert sweep.id in str(app.screen.query_one("#sweep-title").render())
            await pilot.press("s")  # linear -> knn
            for _ in range(100):
                if table.row_count == 4 and table.get_row_at(0)[1:3] == ["0.1", "64"]:
                    break
                await pilot.pause(0.05)
            assert [table.get_row_at(i)[:3] for i in range(2)] == [[BEST, "0.1", "64"],
                                                                    ["", "0.3", "64"]]
            assert "sorted by knn" in str(app.screen.query_one("#sweep-title").render())

    asyncio.run(scenario())


def test_bad_sweep_input_is_one_line_and_queues_nothing(tmp_path: Path) -> None:
    out = cli("-o", str(tmp_path), "sweep", str(SMOKE), "train.epohcs=1,2")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "sslterm: <command line>: train.epohcs: unknown key; did you mean 'train.epochs'?"]
    assert queue.pending(tmp_path) == [] and not (tmp_path / ".sweeps").exists()
    out = cli("-o", str(tmp_path), "sweep", str(SMOKE), "train.epochs=1,2", "--parallel", "0")
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["sslterm: <command line>: --parallel: must be >= 1 (got 0)"]
    out = cli("-o", str(tmp_path), "sweep", str(SMOKE), "train.epochs=1")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "sslterm: <command line>: nothing to sweep: give a KEY=A,B with two values or more"]
    assert queue.pending(tmp_path) == [] and not (tmp_path / ".sweeps").exists()


def test_find_sweep_by_prefix_and_newest(finished_sweep) -> None:
    sweep, out = finished_sweep
    assert find_sweep(None, out) == sweep == find_sweep("smoke-sweep", out)
    with pytest.raises(UserError, match="not found"):
        find_sweep("other", out)


# -- a real sweep ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_2x2_sweep_through_the_real_queue_ends_with_four_runs_and_the_table(
        tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = cli("-o", str(out), "sweep", str(SMOKE), "train.base_lr=0.05,0.1",
               "train.batch_size=32,64", "train.epochs=1", "train.max_steps_per_epoch=2",
               "probe.enabled=false", "--parallel", "2", cwd=tmp_path, timeout=900)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    runs = sorted(p for p in out.iterdir() if (p / "status.json").exists())
    assert len(runs) == 4 and all(RUN_ID.match(p.name) for p in runs)
    assert [RunDir(p).state()[0] for p in runs] == ["finished"] * 4, done.stdout
    names = {json.loads((p / "status.json").read_text())["profile"] for p in runs}
    assert names == {f"smoke-base_lr{lr}-batch_size{b}" for lr in ("0.05", "0.1") for b in (32, 64)}
    table = done.stdout[done.stdout.index("sweep smoke-sweep-"):].splitlines()
    assert sum(line.split()[-1] in {p.name for p in runs} for line in table if line.split()) == 4
    assert sum(line.lstrip().startswith(BEST) for line in table) == 1

    # the real runs' logs: a figure of all four, and an export that equals the log
    svg, png = tmp_path / "loss.svg", tmp_path / "loss.png"
    for fig in (svg, png):
        drawn = cli("-o", str(out), "plot", *(p.name for p in runs), "--out", str(fig))
        assert drawn.returncode == 0, drawn.stderr
    texts = {"".join(t.itertext()).strip() for t in ET.parse(svg).getroot().iter(
        "{http://www.w3.org/2000/svg}text")}
    assert {p.name for p in runs} <= texts
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    exported = cli("-o", str(out), "export", runs[0].name)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    losses = [e["loss"] for e in read_events(runs[0]) if e["kind"] == "step"]
    assert losses and [float(r["value"]) for r in rows if r["series"] == "loss"] == losses
