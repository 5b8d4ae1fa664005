"""Snapshot tests of the main screens on fixed run directories.

Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs under ``tests/__snapshots__/``. Everything shown is fixed:
run data, times (TZ pinned to UTC), paths (relative, from a temporary cwd), the
system sample (a stand-in monitor), queue items.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuihelpers import SMOKE, T0, make_runs, shows_its_view, write_run

from sslterm.tui.app import SSLTermApp
from sslterm.tui.screens.composer import ComposerScreen
from sslterm.tui.system import GpuSample, SystemSample
from sslterm.tui.widgets.charts import MetricChart
from sslterm.tui.widgets.log_tail import LogTail

SIZE = (130, 40)


class FixedMonitor:
    def sample(self) -> SystemSample:
        gpu = GpuSample(0, "NVIDIA H100 80GB HBM3", 87.0, 61 << 30, 80 << 30, 64, 512.0)
        return SystemSample(42.0, 16, 23 << 30, 128 << 30, (3.2, 2.9, 2.5), [gpu], "")


@pytest.fixture
def app(tmp_path, monkeypatch, utc) -> SSLTermApp:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    make_runs(tmp_path / "runs")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "smoke.toml").write_text(SMOKE)
    return SSLTermApp("runs", "profiles", poll_interval=0.2, system_monitor=FixedMonitor(),
                      env_check_delay=None)


async def settle(pilot, charts: int = 4) -> None:
    """Wait until every log is read and every visible chart shows its current data."""
    app = pilot.app

    def done() -> bool:
        if app.polls < 2 or app.index.incomplete:
            return False
        if not all(s.events for s in app.index.runs.values()):
            return False
        if any(not log.lines for log in app.screen.query(LogTail)):
            return False  # the log pane reads its file in a worker
        shown = [c for c in app.screen.query(MetricChart) if c.display]
        current = [c for c in shown if c.draws and c._drawn_data == c._data()]
        return len(current) >= charts and len(current) == len(shown)

    for _ in range(400):
        if done():
            break
        await pilot.pause(0.05)
    await pilot.pause(0.3)


async def until(pilot, predicate, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {predicate}")


def test_runs_view(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_runs_view_failed_run(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_composer_with_inline_error(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("2")
        await until(pilot, lambda: isinstance(pilot.app.screen, ComposerScreen))
        screen = pilot.app.screen
        screen.open_path(Path("profiles/smoke.toml"))
        screen.edit_field("train.base_lr")
        screen.query_one("#edit-input").cursor_blink = False
        await pilot.press("end", "ctrl+u", "-", "1", "escape")
        await until(pilot, lambda: screen.fields.has_focus and screen.error is not None)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_compare_two_runs(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("down", "space", "space", "c")
        await until(pilot, lambda: pilot.app.current_mode == "compare")
        await until(pilot, lambda: pilot.app.screen.query_one("#diff").row_count == 2)
        await settle(pilot, charts=1)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_queue(app, snap_compare, tmp_path):
    qdir = tmp_path / "runs" / ".queue"
    qdir.mkdir()
    for n, stem in enumerate(("smoke", "cifar10"), 1):
        item = {"stem": stem, "text": "", "overrides": [], "cwd": str(tmp_path),
                "queued": f"2024-05-02T08:0{n}:00+00:00", "source": f"profiles/{stem}.toml"}  # fmt: skip
        (qdir / f"{n:020d}-{stem}.json").write_text(json.dumps(item))
    (qdir / "history.jsonl").write_text(
        json.dumps(
            {
                "item": "x",
                "stem": "smoke",
                "at": "2024-05-01T18:00:00+00:00",
                "run": "smoke-20240501-180000",
                "error": None,
            }
        )
        + "\n"  # fmt: skip
    )

    async def before(pilot):
        await settle(pilot)
        await pilot.press("4")
        await until(pilot, lambda: pilot.app.current_mode == "queue")
        screen = pilot.app.screen
        await until(pilot, lambda: screen.query_one("#history").row_count == 1)
        await until(pilot, lambda: screen.query_one("#pending").row_count == 2)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_system_panel(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("5")
        await until(pilot, lambda: pilot.app.current_mode == "system")
        await until(pilot, lambda: pilot.app.screen.query_one("#gpus").row_count == 1)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_run_detail(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: getattr(pilot.app.screen, "details", None) is not None)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)


def test_chart_cursor_and_log_y(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("tab", "left", "left", "left", "left", "left", "left", "y")
        charts = list(pilot.app.screen.query(MetricChart))
        focused = pilot.app.focused
        await until(pilot, lambda: all(
            c.cursor == focused.cursor and shows_its_view(c) and c.readout
            for c in charts
        ))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_metric_picker(app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("m")
        await until(pilot, lambda: pilot.app.screen.query("#metrics"))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=before)


# -- 80x24 and the composer's dropdown (issue 20) ------------------------------------------
SMALL = (80, 24)
SWEEP_RUN = "smoke-base_lr0.1-batch_size64-20240502-120000"


@pytest.fixture
def sweep_app(app, tmp_path) -> SSLTermApp:
    """The fixed runs and a sweep's run (a 46-column id), newest."""
    write_run(tmp_path / "runs", SWEEP_RUN, state="finished", start=T0 + 9 * 3600)
    return app


def test_runs_view_80x24(sweep_app, snap_compare):
    """Every number column fits; the long id is elided, the full one in the top line."""
    assert snap_compare(sweep_app, terminal_size=SMALL, run_before=settle)


def test_keys_dialog_80x24(app, snap_compare):
    app.figures_dir = Path("/srv/figures")

    async def before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: pilot.app.screen.query("#keys"))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SMALL, run_before=before)


def test_compare_three_runs_80x24(sweep_app, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("space", "space", "space", "c")
        await until(pilot, lambda: pilot.app.current_mode == "compare")
        await until(pilot, lambda: len(pilot.app.screen.query_one("#results").columns) == 4)
        await settle(pilot, charts=1)

    assert snap_compare(sweep_app, terminal_size=SMALL, run_before=before)


def test_composer_method_dropdown(app, snap_compare):
    """The help text keeps its [sections]; the dropdown opens below, clear of it."""

    async def before(pilot):
        await settle(pilot)
        await pilot.press("2")
        await until(pilot, lambda: isinstance(pilot.app.screen, ComposerScreen))
        screen = pilot.app.screen
        screen.open_path(Path("profiles/smoke.toml"))
        screen.edit_field("model.method")
        select = screen.query_one("#edit-select")
        await until(pilot, lambda: select.has_focus)
        await pilot.press("enter")
        await until(pilot, lambda: select.expanded)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)
