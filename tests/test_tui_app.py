"""Pilot tests of the app's flows on fixed run directories (no training runs here;
the flows with the real launcher are in test_tui_e2e.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from runhelpers import start_stand_in
from textual.command import CommandList, CommandPalette
from tuihelpers import (
    T0,
    notices,
    screen_text,
    wait_until,
    write_run,
)

from sslterm.profile.edit import format_value, get_value
from sslterm.profile.load import load_profile, validate_text
from sslterm.runs import queue
from sslterm.tui.app import SSLTermApp
from sslterm.tui.screens.composer import ComposerScreen
from sslterm.tui.screens.dialogs import ConfirmScreen, PathPrompt
from sslterm.tui.widgets.charts import MetricChart
from sslterm.tui.widgets.modebar import ModeBar
from sslterm.tui.widgets.profile_form import FieldTable
from sslterm.tui.widgets.runs_table import RunsTable

REPO = Path(__file__).resolve().parents[1]
SIZE = (130, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("utc")]


def make_app(runs_dir: Path, profiles_dir: Path, **kwargs) -> SSLTermApp:
    """The app; the composer's data-path check (a torch child process) only where asked."""
    kwargs.setdefault("env_check_delay", None)
    return SSLTermApp(runs_dir, profiles_dir, poll_interval=0.2, **kwargs)


def row(table: RunsTable, run_id: str) -> list[str]:
    return [str(c) for c in table.get_row(run_id)]


def log_text(log) -> str:
    """The log pane's text, wrapped lines joined again."""
    return " ".join(line.text.rstrip() for line in log.lines)


# -- runs view --------------------------------------------------------------------------
async def test_runs_view_lists_runs_charts_and_failure(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        assert [str(k.value) for k in table.rows] == [
            "smoke-20240501-180000",
            "cifar10-20240501-150000",
            "cifar10-20240501-120000",
        ]
        finished = row(table, "cifar10-20240501-120000")
        assert finished[1:] == [
            "cifar10-20240501-120000", "finished", "simclr", "10/10", "", "0.8163", "80.5%",
            "85.0%", "1800", "cifar10", "2024-05-01 12:00", "10m01s",
        ]  # fmt: skip
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[3:] == ["method", "epoch", "ETA", "loss", "kNN", "linear test", "img/s",
                              "profile", "created", "trained"]  # fmt: skip
        chart = app.screen.query_one("#chart-loss", MetricChart)
        await wait_until(pilot, lambda: chart.points > 0)

        await pilot.press("down")  # the failed run: its error in plain sight
        await wait_until(pilot, lambda: "CUDA out of memory" in screen_text(app))
        banner = app.screen.query_one("#error-banner")
        assert banner.display and "failed: rank 0: RuntimeError" in screen_text(app)
        assert "engine.py" in screen_text(app)  # last traceback lines too

        draws = chart.draws
        await pilot.press("e")
        assert app.smoothing == 0.6 and "EMA 0.6" in app.screen.query_one(ModeBar).note
        await wait_until(pilot, lambda: chart.draws > draws)
        await pilot.press("e", "e")
        assert app.smoothing == 0.99
        await pilot.press("e")
        assert app.smoothing == 0.0 and "EMA off" in app.screen.query_one(ModeBar).note
        await pilot.press("x")
        assert app.axis == "epoch"
        await pilot.press("x", "x")
        assert app.axis == "step"


async def test_live_run_refreshes_by_itself(tmp_path, profiles_dir):
    """A run that keeps writing: the table and the chart follow it without a key press."""
    out = tmp_path / "runs"
    run = write_run(out, "live-20240501-120000", state="running", start=T0, done_epochs=1)
    log = run / "events.jsonl"
    app = make_app(out, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(RunsTable)
        chart = app.screen.query_one("#chart-loss", MetricChart)
        await wait_until(pilot, lambda: chart.points > 0)
        assert row(table, run.name)[2] == "running"
        before = len(app.index.runs[run.name].series["loss"])
        with open(log, "a") as fh:
            for i in range(1, 31):
                fh.write(json.dumps({"v": 1, "kind": "step", "t": T0 + 100 + i, "epoch": 1,
                                     "step": 20 + i, "loss": 0.123, "lr": 0.1, "ips": 999.0}) + "\n")  # fmt: skip
        await wait_until(pilot, lambda: str(table.get_cell(run.name, "loss")) == "0.123")
        assert str(table.get_cell(run.name, "ips")) == "999"
        assert len(app.index.runs[run.name].series["loss"]) == before + 30
        draws = chart.draws
        await wait_until(pilot, lambda: chart.draws > draws)


async def test_command_palette_offers_every_key(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.index.runs)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for title in ("Stop", "Kill", "Resume", "Delete", "Again…", "Mark", "Compare", "EMA",
                      "Axis", "Metrics…", "Zoom in", "Next charts", "Runs", "Compose", "Queue", "System"):  # fmt: skip
            assert title in titles
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"System")

        def first_hit() -> str:
            hits = app.screen.query_one(CommandList)
            return str(hits.get_option_at_index(0).prompt) if hits.option_count else ""

        await wait_until(pilot, lambda: first_hit().startswith("System"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "system")


async def test_no_color_is_honoured(runs_dir, profiles_dir, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.index.runs)
        assert app.no_color
        assert app.screen.query_one("#chart-loss", MetricChart).theme == "clear"


# -- composer ---------------------------------------------------------------------------
async def open_composer(pilot, app: SSLTermApp, path: Path) -> ComposerScreen:
    await pilot.press("2")
    await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
    screen = app.screen
    assert screen.open_path(path)  # synchronous: the document and the errors are set
    return screen


async def type_into_field(pilot, screen: ComposerScreen, key: str, text: str) -> None:
    """Type ``text`` into ``key``'s editor; returns once the document holds it."""
    editor = screen.query_one("#edit-input")
    screen.edit_field(key)
    await wait_until(pilot, lambda: screen.editor.spec.key == key and editor.has_focus)
    await pilot.press("end", "ctrl+u", *text)
    await wait_until(pilot, lambda: format_value(get_value(screen.doc, key)) == text,
                     what=lambda: f"{key} = {get_value(screen.doc, key)!r}, typed {text!r}")  # fmt: skip


async def test_composer_inline_error_is_the_cli_message_then_fix_and_save(runs_dir, profiles_dir):
    path = profiles_dir / "smoke.toml"
    original = path.read_text()
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, path)
        fields = screen.query_one(FieldTable)
        await type_into_field(pilot, screen, "train.base_lr", "-1")
        await wait_until(pilot, lambda: fields.error_key == "train.base_lr")
        message = str(screen.error)
        assert message.startswith(f"{path}:") and "train.base_lr" in message
        note = str(fields.get_cell("train.base_lr", "note"))
        editor_error = str(screen.query_one("#field-error").render())
        assert note == f"✗ {screen.error.message}" and editor_error.strip() == message
        await pilot.press("ctrl+s")  # saving an invalid profile is allowed (work in progress)
        await wait_until(pilot, lambda: not screen.dirty)
        cli = subprocess.run(
            [sys.executable, "-m", "sslterm", "profile", "show", str(path)],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 2
        assert cli.stderr.strip() == f"sslterm: {message}"  # the CLI's own line

        await type_into_field(pilot, screen, "train.base_lr", "0.02")
        await wait_until(pilot, lambda: screen.error is None, what=lambda: f"{screen.error}\n{screen.text}")
        assert fields.error_key is None
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.dirty)
    saved = path.read_text()
    changed = [
        (a, b) for a, b in zip(original.splitlines(), saved.splitlines(), strict=True) if a != b
    ]
    assert changed == [("base_lr = 0.05", "base_lr = 0.02")]  # comments and layout kept


async def test_composer_marks_every_bad_field_and_ctrl_j_walks_them(runs_dir, profiles_dir):
    path = profiles_dir / "two.toml"
    path.write_text("[simclr]\ntemperature = -1\n\n[train]\nepochs = 0\n")
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, path)
        fields = screen.query_one(FieldTable)
        await wait_until(pilot, lambda: fields.error_keys == ["simclr.temperature", "train.epochs"])
        for key in fields.error_keys:
            assert str(fields.get_cell(key, "note")).startswith("✗ must be")
        assert "(+1 more: train.epochs)" in str(screen.query_one("#validation").render())
        await pilot.press("ctrl+j")
        await wait_until(pilot, lambda: screen.editor.spec.key == "simclr.temperature")
        await pilot.press("escape", "ctrl+j")
        await wait_until(pilot, lambda: screen.editor.spec.key == "train.epochs")
        assert "train.epochs: must be >= 1" in str(screen.query_one("#field-error").render())
        await type_into_field(pilot, screen, "train.epochs", "2")
        await wait_until(pilot, lambda: fields.error_keys == ["simclr.temperature"])
        assert str(fields.get_cell("train.epochs", "note")) != "✗ must be >= 1 (got 0)"
        assert str(screen.query_one("#field-error").render()).strip() == ""


def method_rows(fields: FieldTable) -> set[str]:
    """The method sections the form shows rows of."""
    return {k.partition(".")[0] for k in fields.specs} & {"simclr", "byol", "mocov3", "simsiam"}


async def test_composer_shows_the_chosen_methods_section_and_switching_shows_another(
    runs_dir, profiles_dir
):
    path = profiles_dir / "smoke.toml"
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, path)
        fields = screen.query_one(FieldTable)
        assert method_rows(fields) == {"simclr"}
        assert str(fields.get_cell("simclr.temperature", "value")) == "0.5"
        screen.edit_field("model.method")
        await wait_until(pilot, lambda: screen.editor.spec.key == "model.method")
        screen.query_one("#edit-select").value = "byol"
        await wait_until(pilot, lambda: method_rows(fields) == {"byol"})
        assert screen.editor.spec.key == "model.method"  # the cursor stays on its field
        await type_into_field(pilot, screen, "byol.momentum_start", "0.996")
        await wait_until(pilot, lambda: screen.error is None and not fields.error_keys)
        assert 'method = "byol"' in screen.text and "momentum_start = 0.996" in screen.text
        screen.edit_field("model.method")
        await wait_until(pilot, lambda: screen.editor.spec.key == "model.method")
        screen.query_one("#edit-select").value = "simclr"
        await wait_until(pilot, lambda: method_rows(fields) == {"simclr"})
        assert str(fields.get_cell("simclr.temperature", "value")) == "0.5"
        await type_into_field(pilot, screen, "simclr.temperature", "0")
        await wait_until(pilot, lambda: fields.error_keys == ["simclr.temperature"])
        line = screen.text.splitlines().index("temperature = 0") + 1
        assert str(screen.error).startswith(f"{path}:{line}: simclr.temperature: must be > 0.0")


async def test_composer_moves_old_layout_keys_to_simclr(runs_dir, profiles_dir):
    """A profile (or a run's profile.toml) from before the method sections opens in the
    new layout, comments kept, and saves as such."""
    old = "[model]\nencoder = \"test_resnet\"\ntemperature = 0.3  # warm\nprojector_dim = 16\n" \
          "\n[train]\nepochs = 2\n"
    path = profiles_dir / "old.toml"
    path.write_text(old)
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, path)
        fields = screen.query_one(FieldTable)
        assert screen.dirty and screen.error is None
        assert "temperature = 0.3  # warm" in screen.text.partition("[simclr]")[2]
        assert "temperature" not in screen.text.partition("[simclr]")[0]
        assert str(fields.get_cell("simclr.projector_dim", "value")) == "16"
        await wait_until(pilot, lambda: "moved model.temperature, model.projector_dim to [simclr]"
                         in notices(app))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.dirty)
    assert load_profile(path) == validate_text(old, str(path))
    assert "[simclr]" in path.read_text()


async def test_composer_select_unknown_key_and_save_as(
    runs_dir, profiles_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    bad = profiles_dir / "typo.toml"
    bad.write_text("# keep me\n[train]\nepoch = 3  # typo\n")
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, bad)
        assert "did you mean 'train.epochs'" in str(screen.error)
        # above the preview (on the widget: where the line wraps depends on the tmp path)
        validation = screen.query_one("#validation")
        await wait_until(pilot, lambda: f"✗ {screen.error}" == str(validation.render()).strip())
        # fix it in the form: a choice through the select, a number through the input
        screen.edit_field("data.dataset")
        await wait_until(pilot, lambda: screen.editor.spec.key == "data.dataset")
        screen.query_one("#edit-select").value = "svhn"
        await wait_until(pilot, lambda: 'dataset = "svhn"' in screen.text)
        await type_into_field(pilot, screen, "train.epochs", "3")
        assert "epochs = 3" in screen.text and "did you mean" in str(screen.error)
        screen.doc["train"].remove("epoch")  # (the form edits schema keys only)
        screen._refresh()
        assert screen.error is None
        await pilot.press("escape", "ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt))
        target = tmp_path / "mine.toml"
        await pilot.press("ctrl+u", *"mine.toml", "enter")
        await wait_until(pilot, lambda: target.exists())
        assert screen.path == Path("mine.toml") and not screen.dirty
    text = target.read_text()
    assert text.startswith("# keep me\n") and 'dataset = "svhn"' in text


async def test_again_opens_the_runs_profile_as_a_new_one(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one(RunsTable).row_count == 3)
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
        screen = app.screen
        assert screen.path is None and screen.stem == "smoke" and screen.dirty
        assert "temperature = 0.5" in screen.text


# -- compare ----------------------------------------------------------------------------
async def test_compare_overlays_and_lists_only_differing_keys(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        await pilot.press("down", "space", "space")  # mark both cifar10 runs
        assert app.marked == {"cifar10-20240501-150000", "cifar10-20240501-120000"}
        await pilot.press("c")
        await wait_until(pilot, lambda: app.current_mode == "compare")
        diff = app.screen.query_one("#diff")
        await wait_until(pilot, lambda: diff.row_count > 0)
        assert [str(k.value) for k in diff.rows] == ["model.temperature", "train.base_lr"]
        assert "2 profile keys differ" in screen_text(app)
        chart = app.screen.query_one(MetricChart)
        await wait_until(pilot, lambda: chart.points > 0)
        assert len(chart._lines) == 2
        await pilot.press("m")
        assert app.screen.metric == "val_loss"


# -- queue ------------------------------------------------------------------------------
async def test_queue_two_profiles_from_the_composer(runs_dir, profiles_dir, monkeypatch):
    started = []
    monkeypatch.setattr(queue, "ensure_runner", lambda out: started.append(out) or True)
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_composer(pilot, app, profiles_dir / "smoke.toml")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(queue.pending(runs_dir)) == 1)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(queue.pending(runs_dir)) == 2)
        assert len(started) == 2
        await pilot.press("escape", "4")
        await wait_until(pilot, lambda: app.current_mode == "queue")
        pending = app.screen.query_one("#pending")
        await wait_until(pilot, lambda: pending.row_count == 2)
        assert "2 waiting" in screen_text(app)
        first, second = (i.id for i in queue.pending(runs_dir))
        await pilot.press("down", "shift+up")  # the second item goes first, the cursor with it
        await wait_until(pilot, lambda: [i.id for i in queue.pending(runs_dir)][1] == first)
        await wait_until(pilot, lambda: pending.cursor_row == 0)
        await pilot.press("x")  # removes the moved item
        await wait_until(pilot, lambda: pending.row_count == 1)
    assert [i.id for i in queue.pending(runs_dir)] == [first]


# -- run control with real processes (a stand-in supervisor, no training) ------------------
def start_fake(out: Path, run_id: str) -> tuple[Path, subprocess.Popen]:
    run = write_run(out, run_id, state="running", start=T0 + 9 * 3600, done_epochs=1,
                    host=socket.gethostname())  # fmt: skip
    return run, start_stand_in(run)


async def test_stop_kill_delete_on_live_processes(runs_dir, profiles_dir):
    run_a, proc_a = start_fake(runs_dir, "zz-20240502-000000")
    run_b, proc_b = start_fake(runs_dir, "zz-20240502-000001")
    try:
        app = make_app(runs_dir, profiles_dir)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(RunsTable)
            await wait_until(pilot, lambda: table.row_count == 5)
            assert table.selected == run_b.name
            assert row(table, run_b.name)[2] == "running"
            await pilot.press("d")  # never delete a running run
            await wait_until(pilot, lambda: "stop it before deleting" in notices(app))
            assert run_b.exists() and not isinstance(app.screen, ConfirmScreen)

            await pilot.press("k")  # kill asks first; 'n' keeps it running
            await wait_until(pilot, lambda: "Kill zz-20240502-000001?" in screen_text(app))
            await pilot.press("n")
            await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
            assert proc_b.poll() is None
            await pilot.press("k")
            await wait_until(pilot, lambda: "Kill zz-20240502-000001?" in screen_text(app))
            await pilot.press("y")
            await wait_until(pilot, lambda: proc_b.poll() is not None)
            await wait_until(pilot, lambda: row(table, run_b.name)[2] == "failed")

            await pilot.press("down")  # the other one: a graceful stop
            assert table.selected == run_a.name
            await pilot.press("s")
            await wait_until(pilot, lambda: row(table, run_a.name)[2] == "stopped")
            assert proc_a.wait(timeout=30) == 0

            await pilot.press("d")
            await wait_until(pilot, lambda: "Delete zz-20240502-000000" in screen_text(app))
            await pilot.press("y")
            await wait_until(pilot, lambda: not run_a.exists())
            await wait_until(pilot, lambda: table.row_count == 4)
    finally:
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_two_apps_watch_one_run(tmp_path, profiles_dir):
    """Two apps on one live run: both follow it, a stop from one shows in both."""
    out = tmp_path / "runs"
    run, proc = start_fake(out, "shared-20240502-000000")
    try:
        one, two = make_app(out, profiles_dir), make_app(out, profiles_dir)
        async with one.run_test(size=SIZE) as p1, two.run_test(size=(100, 30)) as p2:
            t1, t2 = one.screen.query_one(RunsTable), two.screen.query_one(RunsTable)
            await wait_until(p1, lambda: t1.row_count == 1 and t2.row_count == 1)
            with open(run / "events.jsonl", "a") as fh:
                fh.write(json.dumps({"v": 1, "kind": "step", "t": T0 + 9e4, "epoch": 1, "step": 21,
                                     "loss": 0.4242, "lr": 0.1, "ips": 10.0}) + "\n")  # fmt: skip
                fh.write('{"v":1,"kind":"step","t":1')  # a torn line: never shown
            await wait_until(p1, lambda: str(t1.get_cell(run.name, "loss")) == "0.4242" == str(t2.get_cell(run.name, "loss")))
            log_one = one.screen.query_one("#log")
            await wait_until(p1, lambda: "epoch 0: loss ok" in log_text(log_one))
            await p2.press("s")
            await wait_until(p1, lambda: row(t1, run.name)[2] == "stopped" == row(t2, run.name)[2])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_open_picker_new_from_shipped_and_by_path(
    runs_dir, profiles_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    other = Path("elsewhere.toml")
    other.write_text("# mine\n[train]\nepochs = 7\n")
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
        composer = app.screen
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: "Open a profile" in screen_text(app))
        await pilot.press("c")  # a new profile from the highlighted shipped one
        await wait_until(pilot, lambda: app.screen is composer)
        assert composer.path is None and composer.stem == "smoke" and "test_resnet" in composer.text
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: "Open a profile" in screen_text(app))
        await pilot.press("tab", *str(other), "enter")  # or any path
        await wait_until(pilot, lambda: composer.path == other)
        assert composer.text == other.read_text()
        mine = Path("my-cifar.toml")
        mine.write_text("[train]\nepochs = 9\n")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: "Open a profile" in screen_text(app))
        await pilot.press(*str(mine), "enter")  # typed with the list focused: a path, 'c' too
        await wait_until(pilot, lambda: composer.path == mine)
        assert composer.text == mine.read_text()


# -- charts, state line, log pane, table, footer (issue 11 items 5-8) ---------------------
async def show_run(pilot, app: SSLTermApp, run_id: str) -> None:
    table = app.screen.query_one(RunsTable)
    await wait_until(pilot, lambda: table.row_count >= 1 and run_id in app.index.runs)
    table.move_cursor(row=table.get_row_index(run_id))
    await wait_until(pilot, lambda: table.selected == run_id)


def drawn(chart: MetricChart, metric: str, kind: str) -> list[float] | None:
    return next((ys for m, k, ys in chart.plotted if (m, k) == (metric, kind)), None)


async def test_ema_bends_only_noisy_series_and_evaluations_are_marked(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await show_run(pilot, app, "cifar10-20240501-120000")
        charts = {c.id: c for c in app.screen.query(MetricChart)}
        await pilot.press("e", "e", "e")  # EMA 0.99
        assert app.smoothing == 0.99
        summary = app.index.runs["cifar10-20240501-120000"]

        def replotted() -> bool:
            return all(c._drawn_view is not None and c._drawn_view[2] == 0.99
                       for c in charts.values()) and drawn(charts["chart-lr"], "lr", "line")  # fmt: skip

        await wait_until(pilot, replotted)
        # drawn values are downsampled to the chart's width (min/max per column)
        lr, raw_lr = drawn(charts["chart-lr"], "lr", "line"), summary.series["lr"].value
        assert set(lr) <= set(raw_lr) and max(lr) == max(raw_lr)  # as logged: no lag, no rise
        loss_raw = drawn(charts["chart-loss"], "loss", "raw")
        loss_line = drawn(charts["chart-loss"], "loss", "line")
        assert set(loss_raw) <= set(summary.series["loss"].value)  # raw values behind...
        assert set(loss_line) <= set(summary.series["loss"].smoothed(0.99))  # ...the EMA
        assert not set(loss_line) & set(loss_raw[1:])
        assert drawn(charts["chart-loss"], "val_loss", "line") == list(
            summary.series["val_loss"].value
        )  # one point per validation: not smoothed
        acc = charts["chart-acc"]
        assert drawn(acc, "linear", "points") == list(summary.series["linear"].value)
        assert drawn(acc, "knn", "points") == list(summary.series["knn"].value)
        assert all(isinstance(t, int) for t in charts["chart-loss"].xticks)
        await pilot.press("x")  # epoch axis: whole epochs
        await wait_until(pilot, lambda: charts["chart-loss"]._drawn_view[1] == "epoch")
        ticks = charts["chart-loss"].xticks
        assert ticks and all(isinstance(t, int) for t in ticks) and ticks[-1] <= 10


async def test_a_single_evaluation_is_a_visible_point(tmp_path, profiles_dir):
    out = tmp_path / "runs"
    run = write_run(out, "one-20240501-120000", state="finished", start=T0, epochs=5,
                    done_epochs=5)  # fmt: skip  (one probe: after epoch 4)
    app = make_app(out, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await show_run(pilot, app, run.name)
        acc = app.screen.query_one("#chart-acc", MetricChart)
        await wait_until(pilot, lambda: drawn(acc, "linear", "points") is not None)
        assert len(drawn(acc, "linear", "points")) == 1
        assert "●" in screen_text(app)


async def test_chart_state_and_keys_fit_in_80_columns(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one(RunsTable).row_count == 3)
        await wait_until(pilot, lambda: "x: step · EMA off" in screen_text(app))
        await pilot.press("e", "x")
        await wait_until(pilot, lambda: "x: epoch · EMA 0.6" in screen_text(app))
        footer = screen_text(app).splitlines()[-1]
        assert "s Stop" in footer and "? Keys" in footer and "^q Quit" in footer
        assert footer.rstrip().endswith("▏^p palette")  # nothing hidden under the palette key


async def test_log_pane_shows_the_followers_progress_lines_wrapped(runs_dir, profiles_dir):
    from sslterm.runs.follow import describe
    from sslterm.runs.summary import RunSummary

    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_run(pilot, app, "cifar10-20240501-120000")
        log = app.screen.query_one("#log")
        summary: RunSummary = app.index.runs["cifar10-20240501-120000"]
        probe = next(e for e in summary.notes if e["kind"] == "probe")
        expected = " ".join(describe(probe).split())
        await wait_until(pilot, lambda: expected in " ".join(log_text(log).split()),
                         what=lambda: log_text(log))  # fmt: skip
        assert "epoch    9  loss" in log_text(log)
        assert "epoch 9: loss ok" in log_text(log)  # stdout.log too
        width = log.scrollable_content_region.width
        assert max(len(line.text.rstrip()) for line in log.lines) <= width  # wrapped, not cut


def test_linear_column_names_its_split():
    from types import SimpleNamespace

    from sslterm.tui.widgets.runs_table import linear_header

    test = SimpleNamespace(linear=45.0, linear_split="test")
    val = SimpleNamespace(linear=96.0, linear_split="val")
    none = SimpleNamespace(linear=None, linear_split="")
    assert linear_header([test, none]) == "linear test"
    assert linear_header([val]) == "linear val"
    assert linear_header([test, val]) == "linear"  # mixed: each cell says which
    assert linear_header([none]) == "linear"


def test_compare_treats_two_spellings_of_a_folder_as_one():
    from sslterm.profile.edit import differing_keys
    from sslterm.tui.screens.compare import normalise_paths

    a = {"launch": {"output_dir": "runs"}, "data": {"root": "./data/", "class_list": ""}}
    b = {"launch": {"output_dir": "./runs"}, "data": {"root": "data", "class_list": ""}}
    c = {"launch": {"output_dir": "/scratch/runs"}, "data": {"root": "data", "class_list": ""}}
    assert differing_keys([normalise_paths(a), normalise_paths(b)]) == []
    assert [k for k, _ in differing_keys([normalise_paths(a), normalise_paths(c)])] == [
        "launch.output_dir"
    ]
    assert a["launch"]["output_dir"] == "runs" and b["data"]["root"] == "data"  # not mutated


async def test_system_panel_on_a_mig_gpu(runs_dir, profiles_dir):
    from test_tui_system import fake_nvml

    from sslterm.tui.system import SystemMonitor

    app = make_app(runs_dir, profiles_dir, system_monitor=SystemMonitor(nvml=fake_nvml()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await wait_until(pilot, lambda: app.current_mode == "system")
        gpus = app.screen.query_one("#gpus")
        await wait_until(pilot, lambda: gpus.row_count == 1)
        name, util, memory = (str(c) for c in gpus.get_row_at(0)[1:4])
        assert name == "NVIDIA H100 80GB HBM3" and util == "—"
        assert memory.endswith("3.0 GiB / 80.0 GiB")
        assert "unavailable" not in screen_text(app)


# -- composer: quit, dialogs, data paths ---------------------------------------------------
async def test_quit_with_unsaved_changes_asks_first(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, profiles_dir / "smoke.toml")
        await type_into_field(pilot, screen, "train.epochs", "5")
        assert screen.dirty
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        # on the widget: the question holds the profile's tmp path, and wraps where it may
        question = " ".join(str(app.screen.query_one("#question").render()).split())
        assert question.endswith("smoke.toml has unsaved changes.")
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        assert app.is_running
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.is_running)


async def test_quit_without_changes_does_not_ask(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_composer(pilot, app, profiles_dir / "smoke.toml")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)


@pytest.mark.parametrize("width", [80, 120])
async def test_dialogs_fit_and_wrap(runs_dir, profiles_dir, width):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(width, 30)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        run = app.index.runs[table.selected].run
        await pilot.press("d")  # a long question: the run's full path
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = f"Delete {run.id} and everything in {run.path}?"
        await wait_until(pilot, lambda: "y yes" in screen_text(app))
        dialog = app.screen.query_one(".dialog")
        assert dialog.region.right <= width
        box = app.screen.query_one("#question").region
        lines = screen_text(app).splitlines()[box.y : box.bottom]
        shown = "".join(line[box.x : box.right] for line in lines)
        assert "".join(shown.split()) == "".join(question.split())  # wrapped, not cut
        await pilot.press("n", "2", "ctrl+o")
        await wait_until(pilot, lambda: "Open a profile" in screen_text(app))
        assert app.screen.query_one(".dialog").region.right <= width


@pytest.mark.slow  # each check is a child process that imports torch and timm
async def test_composer_checks_data_paths_as_you_type(
    runs_dir, profiles_dir, tmp_path, monkeypatch
):
    """A bad data path is marked on data.root before launch (the launcher's own check, in
    a child process, after typing pauses); files a launch would download are fine."""
    monkeypatch.chdir(tmp_path)
    path = profiles_dir / "folder.toml"
    path.write_text('[data]\ndataset = "imagefolder"\nroot = "nowhere"\n\n'
                    '[model]\nencoder = "test_resnet"\n')  # fmt: skip
    app = make_app(runs_dir, profiles_dir, env_check_delay=1.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, path)
        fields = screen.query_one(FieldTable)
        assert screen.env_checking and "checking data paths" in str(
            screen.query_one("#validation").render()
        )
        # typing on before the check starts: it checks the text that was valid, so the
        # schema error typed meanwhile never comes back as a data-path result
        await type_into_field(pilot, screen, "train.epochs", "0")
        await type_into_field(pilot, screen, "train.epochs", "2")
        await wait_until(pilot, lambda: fields.error_key == "data.root", timeout=240,
                         what=lambda: str(screen.error))  # fmt: skip
        assert str(screen.error).startswith(f"{path}:3: data.root: imagefolder: folder ")
        assert "nowhere/train not found" in str(screen.error)
        await pilot.press("ctrl+l")  # refused like any other error
        await wait_until(pilot, lambda: str(screen.error) in notices(app))
        assert not screen.launching
        await type_into_field(pilot, screen, "data.root", "elsewhere")
        await wait_until(pilot, lambda: "elsewhere/train not found" in str(screen.error), timeout=240,
                         what=lambda: str(screen.error))  # fmt: skip
        assert fields.error_key == "data.root"
        screen.edit_field("data.dataset")
        await wait_until(pilot, lambda: screen.editor.spec.key == "data.dataset")
        screen.query_one("#edit-select").value = "cifar10"  # missing, but data.download = true
        await wait_until(pilot, lambda: screen.error is None and not screen.env_checking,
                         timeout=240, what=lambda: str(screen.error))  # fmt: skip
        assert not (tmp_path / "elsewhere").exists()  # nothing was downloaded
        await wait_until(pilot, lambda: "✓ valid — TOML" in screen_text(app))


async def test_short_terminal_keeps_two_readable_charts(runs_dir, profiles_dir):
    """80x24 with an error banner: one row of charts (loss, accuracy), not four squashed."""
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_run(pilot, app, "cifar10-20240501-150000")  # the failed run: a banner
        grid = app.screen.query_one("#charts")
        await wait_until(pilot, lambda: grid.has_class("-one-row"))
        shown = [c.id for c in app.screen.query(MetricChart) if c.display]
        assert shown == ["chart-loss", "chart-acc"]
        assert all(c.size.height >= 7 for c in app.screen.query(MetricChart) if c.display)
        await show_run(pilot, app, "cifar10-20240501-120000")  # no banner: room for two rows
        await wait_until(pilot, lambda: not grid.has_class("-one-row"))


async def test_composer_previews_the_views_the_method_trains_on(runs_dir, profiles_dir):
    """ctrl+v draws the profile's views (by ``sslterm views`` in a child) in half blocks;
    ctrl+v again hides them."""
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_composer(pilot, app, profiles_dir / "smoke.toml")
        await pilot.press("ctrl+v")
        panel = screen.query_one("#views-preview")
        await wait_until(pilot, lambda: screen.views_shown is not None, timeout=240,
                         what=lambda: str(panel.render()))
        assert screen.views_shown.pixels is not None, screen.views_shown.message
        assert "2 views" in screen.views_shown.message
        await wait_until(pilot, lambda: "▀" in str(panel.render()))
        await pilot.press("ctrl+v")
        await wait_until(pilot, lambda: not panel.display)
