"""Run metadata (label, tags, note) and finding runs (filter, sort, group): through the CLI
(real subprocesses), the queue and sweeps, and the app (Pilot) on fixed run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runhelpers import SMOKE
from tuihelpers import screen_text, wait_until

from sslterm.errors import UserError
from sslterm.runs import queue
from sslterm.runs.meta import edit_meta, read_meta
from sslterm.runs.query import filter_runs, group_runs, parse_filter, sort_runs
from sslterm.runs.store import RunDir
from sslterm.runs.summary import RunSummary
from sslterm.runs.sweep import create_sweep, parse_axes

REPO = Path(__file__).resolve().parents[1]
FINISHED, FAILED, STOPPED = ("cifar10-20240501-120000", "cifar10-20240501-150000",
                             "smoke-20240501-180000")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))


def records(out: Path, *args: str) -> list[dict]:
    done = cli("-o", str(out), "runs", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_label_tags_and_note_round_trip_through_the_cli(runs_dir: Path) -> None:
    done = cli("-o", str(runs_dir), "label", FINISHED, "baseline lr 0.3", "--tag", "paper",
               "--tag", "lr", "--note", "the one in table 2")
    assert done.returncode == 0, done.stderr
    assert "baseline lr 0.3" in done.stdout
    by_id = {r["id"]: r for r in records(runs_dir)}
    assert (by_id[FINISHED]["label"], by_id[FINISHED]["tags"], by_id[FINISHED]["note"]) == (
        "baseline lr 0.3", ["paper", "lr"], "the one in table 2")
    assert (by_id[FAILED]["label"], by_id[FAILED]["tags"]) == ("", [])
    # the frozen profile is untouched; the metadata has its own file
    assert "baseline" not in (runs_dir / FINISHED / "profile.toml").read_text()
    assert cli("-o", str(runs_dir), "label", FINISHED, "--untag", "lr").returncode == 0
    assert read_meta(RunDir(runs_dir / FINISHED)).tags == ("paper",)
    table = cli("-o", str(runs_dir), "runs").stdout
    assert "label" in table.splitlines()[0] and "baseline lr 0.3" in table

    bad = cli("-o", str(runs_dir), "label", FINISHED, "--tag", "two words")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert "--tag 'two words'" in bad.stderr
    assert read_meta(RunDir(runs_dir / FINISHED)).tags == ("paper",)  # nothing written


def test_a_bad_label_at_launch_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = cli("-o", str(out), "run", str(SMOKE), "--detach", "--label", "x" * 81)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["sslterm: --label: at most 80 characters (got 81)"]
    assert not out.exists()


def test_queued_runs_and_sweep_points_carry_their_metadata(tmp_path: Path) -> None:
    from sslterm.runs.meta import make_meta

    queue.enqueue(tmp_path, SMOKE.read_text(), "one", start_runner=False,
                  meta=make_meta("solo", ["a"], "n"))
    create_sweep(tmp_path, SMOKE, parse_axes(["train.base_lr=0.1,0.2", "train.seed=0,1"]),
                 start_runner=False, meta=make_meta("lrs", ["sweep"]))
    items = queue.pending(tmp_path)
    assert (items[0].meta.label, items[0].meta.tags, items[0].meta.note) == ("solo", ("a",), "n")
    # the seed is left out of a point's label: the runs of one seed group share it
    assert [i.meta.label for i in items[1:]] == ["lrs base_lr=0.1"] * 2 + ["lrs base_lr=0.2"] * 2
    assert {i.meta.tags for i in items[1:]} == {("sweep",)}


def summaries(runs_dir: Path) -> list[RunSummary]:
    out = []
    for path in sorted(runs_dir.iterdir()):
        s = RunSummary(RunDir(path))
        s.update()
        out.append(s)
    return out


def test_filter_sort_and_group_headless(runs_dir: Path) -> None:
    edit_meta(RunDir(runs_dir / FINISHED), label="base", add=["paper"])
    edit_meta(RunDir(runs_dir / STOPPED), label="smoke", add=["paper", "cpu"])
    runs = summaries(runs_dir)
    ids = lambda found: [s.id for s in found]  # noqa: E731
    assert ids(filter_runs(runs, "tag=paper")) == [FINISHED, STOPPED]
    assert ids(filter_runs(runs, "tag=paper state!=stopped")) == [FINISHED]
    assert ids(filter_runs(runs, "train.base_lr=0.6")) == [FAILED]  # profile key, as a number
    assert ids(filter_runs(runs, "train.base_lr>=0.3 knn>70")) == [FINISHED]
    assert ids(filter_runs(runs, "CIFAR")) == [FINISHED, FAILED]  # a word: any case, any field
    assert ids(filter_runs(runs, "label=sm*")) == [STOPPED]
    assert ids(sort_runs(runs, "knn")) == [FINISHED, FAILED, STOPPED]  # best first
    assert ids(sort_runs(runs, "knn", reverse=True)) == [STOPPED, FAILED, FINISHED]
    assert ids(sort_runs(runs, "label")) == [FINISHED, STOPPED, FAILED]  # no label: last
    assert [(g, ids(r)) for g, r in group_runs(sort_runs(runs, "created"), "profile")] == [
        ("smoke", [STOPPED]), ("cifar10", [FAILED, FINISHED])]
    for bad, message in (("train.base_rl=1", "unknown key 'train.base_rl'"),
                         ("knn>high", "> compares numbers"), ("'open", "No closing quotation")):
        with pytest.raises(UserError, match=message):
            parse_filter(bad)

    got = records(runs_dir, "--filter", "tag=paper", "--sort", "knn")
    assert [r["id"] for r in got] == [FINISHED, STOPPED]
    bad = cli("-o", str(runs_dir), "runs", "--filter", "trian.epochs=3")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert "unknown key 'trian.epochs'" in bad.stderr


@pytest.mark.anyio
@pytest.mark.usefixtures("utc")
async def test_the_app_labels_filters_and_groups_runs(runs_dir: Path, profiles_dir: Path) -> None:
    from sslterm.tui.app import SSLTermApp
    from sslterm.tui.screens.dialogs import MetaScreen
    from sslterm.tui.widgets.runs_table import RunsTable

    app = SSLTermApp(runs_dir, profiles_dir, poll_interval=0.2, env_check_delay=None)
    async with app.run_test(size=(130, 40)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        table.move_cursor(row=table.get_row_index(FAILED), animate=False)
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, MetaScreen))
        await pilot.press(*"oom run", "tab", *"gpu oom", "tab", *"lower the batch", "enter")
        await wait_until(pilot, lambda: "label" in table.drawn_columns
                         and "oom run" in [str(c) for c in table.get_row(FAILED)])
        meta = read_meta(RunDir(runs_dir / FAILED))
        assert (meta.label, meta.tags, meta.note) == ("oom run", ("gpu", "oom"), "lower the batch")
        assert "tags" in table.drawn_columns
        assert {"label": "oom run", "tags": ["gpu", "oom"]}.items() <= {
            k: v for k, v in records(runs_dir)[1].items() if k in ("label", "tags")}.items()

        await pilot.press("slash", *"tag=oom")  # the table follows each keystroke
        await wait_until(pilot, lambda: [str(k.value) for k in table.rows] == [FAILED])
        assert "1 of 3 runs" in screen_text(app)
        await pilot.press("enter", "g")  # back to the table; group by method
        await pilot.press("escape")  # (the table has the focus: escape does nothing here)
        app.screen.query_one("#runs-filter").focus()
        await pilot.press("escape")  # clears the filter
        await wait_until(pilot, lambda: table.row_count == 3 and "group" in table.drawn_columns)
        groups = [str(table.get_row(str(k.value))[1]) for k in table.rows]
        assert groups == ["simclr", "", ""]
        await pilot.press("g")  # state: every run its own group
        await wait_until(pilot, lambda: sorted(str(table.get_row(str(k.value))[1])
                                               for k in table.rows)
                         == ["failed", "finished", "stopped"])


@pytest.mark.anyio
async def test_the_composer_gives_queued_runs_a_label_tags_and_note(runs_dir: Path,
                                                                    profiles_dir: Path,
                                                                    monkeypatch) -> None:
    from sslterm.tui.app import SSLTermApp
    from sslterm.tui.screens.composer import ComposerScreen
    from sslterm.tui.screens.dialogs import MetaScreen

    monkeypatch.setattr(queue, "ensure_runner", lambda out: True)
    app = SSLTermApp(runs_dir, profiles_dir, poll_interval=0.2, env_check_delay=None)
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.press("2")
        await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
        composer = app.screen
        assert composer.open_path(profiles_dir / "smoke.toml")
        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: isinstance(app.screen, MetaScreen))
        await pilot.press(*"lr 0.05", "tab", *"smoke cpu", "enter")
        await wait_until(pilot, lambda: app.screen is composer and "lr 0.05" in screen_text(app))
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(queue.pending(runs_dir)) == 1)
    meta = queue.pending(runs_dir)[0].meta
    assert (meta.label, meta.tags, meta.note) == ("lr 0.05", ("smoke", "cpu"), "")
