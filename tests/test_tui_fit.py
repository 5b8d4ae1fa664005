"""Pilot tests of what the app shows at 80x24 and 120x40 (issue 20, items 4-6): every
number column of the runs table, log lines as wide as their pane, a column per compared
run, the keys dialog over the view, the composer's help text and dropdown, an edit typed
while the data-path check runs, and the small lies (log scale, detail marks, plurals,
where a figure went). Fixed run directories, no training processes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable, Footer, Select
from textual.widgets._select import SelectOverlay
from tuihelpers import T0, notices, screen_text, wait_until, write_run

from sslterm.profile.edit import format_value, get_value
from sslterm.tui.app import SSLTermApp
from sslterm.tui.screens.composer import ComposerScreen
from sslterm.tui.screens.detail import DetailScreen
from sslterm.tui.widgets.charts import MetricChart
from sslterm.tui.widgets.log_tail import LogTail
from sslterm.tui.widgets.modebar import ModeBar
from sslterm.tui.widgets.profile_form import FieldTable
from sslterm.tui.widgets.runs_table import CORE, ELIDE_MIN, RunsTable

SMALL = (80, 24)
SWEEP_RUN = "smoke-base_lr0.1-batch_size64-20240502-120000"
"""A sweep's run id: 46 columns."""
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("utc")]


@pytest.fixture
def sweep_runs(runs_dir: Path) -> Path:
    """The three fixed runs and a sweep's, newest: it is highlighted first."""
    write_run(runs_dir, SWEEP_RUN, state="finished", start=T0 + 9 * 3600)
    return runs_dir


def make_app(runs_dir: Path, profiles_dir: Path, **kwargs) -> SSLTermApp:
    kwargs.setdefault("env_check_delay", None)
    return SSLTermApp(runs_dir, profiles_dir, poll_interval=0.2, **kwargs)


def spans(table: DataTable) -> dict[str, tuple[int, int]]:
    """Each column's first and last cell (+1) in the table, unscrolled."""
    out, x = {}, 0
    for key, column in table.columns.items():
        width = column.get_render_width(table)
        out[str(key.value)] = (x, x + width)
        x += width
    return out


def visible_columns(table: DataTable) -> list[str]:
    """The columns wholly on screen while the table is not scrolled sideways."""
    room = table.scrollable_content_region.width
    return [key for key, (_, end) in spans(table).items() if end <= room]


def widget_text(widget) -> str:
    """What a Static holds, whitespace normalised (wrapping never matters)."""
    return " ".join(str(widget.render()).split())


# -- the runs table --------------------------------------------------------------------
async def test_runs_table_at_80_columns_shows_every_number_and_elides_long_ids(
    sweep_runs, profiles_dir
):
    app = make_app(sweep_runs, profiles_dir)
    async with app.run_test(size=SMALL) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 4 and table.selected == SWEEP_RUN)
        await wait_until(pilot, lambda: set(CORE) <= set(visible_columns(table)),
                         what=lambda: f"{visible_columns(table)} of {spans(table)}")  # fmt: skip
        shown = str(table.get_cell(SWEEP_RUN, "run"))
        assert shown != SWEEP_RUN and "…" in shown and len(shown) < len(SWEEP_RUN)
        assert shown.startswith("smoke-") and shown.endswith("-120000")
        assert str(table.get_cell("cifar10-20240501-120000", "linear")) == "85.0%"
        for label in ("method", "epoch", "ETA", "loss", "kNN", "linear test"):
            assert label in screen_text(app).splitlines()[1]  # the header line
        assert app.screen.query_one(ModeBar).note.startswith(SWEEP_RUN)  # the full id
        await pilot.press("enter")  # ... and in the detail view
        await wait_until(pilot, lambda: getattr(app.screen, "details", None) is not None)
        assert widget_text(app.screen.query_one("#detail-where")).startswith(SWEEP_RUN)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, DetailScreen))
        await pilot.resize_terminal(200, 40)  # room for everything: nothing elided
        await wait_until(pilot, lambda: str(table.get_cell(SWEEP_RUN, "run")) == SWEEP_RUN)
        assert visible_columns(table) == [str(k.value) for k in table.columns]


async def test_a_table_taller_than_its_pane_keeps_room_for_its_scrollbar(
    runs_dir, profiles_dir
):
    """More runs than rows: the vertical scrollbar takes two cells, and the columns up to
    linear still fit beside it, header included."""
    for i in range(14):
        write_run(runs_dir, f"smoke-2024050{1 + i // 10}-13{i % 10:02d}00", state="finished",
                  start=T0 + (10 + i) * 3600, epochs=2, done_epochs=2, spe=2)
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SMALL) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 17)
        await wait_until(pilot, lambda: table.show_vertical_scrollbar)
        await wait_until(pilot, lambda: set(CORE) <= set(visible_columns(table)),
                         what=lambda: f"{visible_columns(table)} of {spans(table)}")  # fmt: skip
        header = screen_text(app).splitlines()[1]
        assert "linear test" in header, header


async def test_column_picker_chooses_the_runs_tables_columns_for_the_session(
    runs_dir, profiles_dir
):
    from sslterm.tui.screens.dialogs import ColumnPicker

    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SMALL) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, ColumnPicker))
        picker = app.screen.query_one("#columns")
        offered = [picker.get_option_at_index(i).value for i in range(picker.option_count)]
        assert "run" not in offered and "mark" not in offered  # those always show
        assert offered[:3] == ["status", "method", "epoch"]
        await pilot.press("down", "space")  # hide "method"
        await pilot.press("escape")  # ... cancelled: nothing changes
        await wait_until(pilot, lambda: not isinstance(app.screen, ColumnPicker))
        assert "method" in table.shown and app.runs_columns is None
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, ColumnPicker))
        await pilot.press("down", "space", "down", "space", "enter")  # hide method and epoch
        await wait_until(pilot, lambda: not isinstance(app.screen, ColumnPicker))
        assert "method" not in table.shown and "epoch" not in table.shown
        assert [str(k.value) for k in table.columns][:4] == ["mark", "run", "status", "eta"]
        assert row_labels(table)[:2] == [" ", "run"]
        await pilot.press("2")  # another view and back: the choice holds
        await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
        await pilot.press("escape", "1")
        await wait_until(pilot, lambda: app.current_mode == "runs")
        assert "method" not in app.screen.query_one(RunsTable).shown
        assert app.runs_columns is not None and "method" not in app.runs_columns


def row_labels(table: DataTable) -> list[str]:
    return [str(c.label) for c in table.columns.values()]


# -- the log pane ----------------------------------------------------------------------
def pane_fits(log: LogTail) -> bool:
    width = log.scrollable_content_region.width
    return bool(log.lines) and all(line.cell_length <= width for line in log.lines)


async def test_log_lines_are_wrapped_to_the_panes_real_width(sweep_runs, profiles_dir):
    """The sweep run's log lines (62 columns) in a 26-column pane: every wrapped line fits
    beside the scrollbar, and a pane that changes width wraps them again, losing nothing."""
    write_run(sweep_runs, "short-20240501-000000", state="stopped", start=T0 - 3600,
              done_epochs=0)  # fmt: skip  (a log of two lines)
    app = make_app(sweep_runs, profiles_dir)
    stdout = (sweep_runs / SWEEP_RUN / "stdout.log").read_text().splitlines()
    async with app.run_test(size=SMALL) as pilot:
        log = app.screen.query_one(LogTail)

        def complete() -> bool:
            text = "".join("".join(line.text.split()) for line in log.lines)
            return all("".join(line.split()) in text for line in stdout)

        await wait_until(pilot, lambda: log.path and log.path.parent.name == SWEEP_RUN)
        await wait_until(pilot, complete, what=lambda: [ln.text for ln in log.lines])
        await wait_until(pilot, lambda: log.show_vertical_scrollbar)
        width = log.scrollable_content_region.width
        assert pane_fits(log), (width, sorted({line.cell_length for line in log.lines}))
        assert log.virtual_size.width <= width  # nothing to scroll sideways to
        table = app.screen.query_one(RunsTable)
        # from a short log (no scrollbar) to a long one: it is written before its scrollbar
        # shows, and must leave it room all the same
        for run in ("short-20240501-000000", SWEEP_RUN, "short-20240501-000000", SWEEP_RUN):
            table.move_cursor(row=table.get_row_index(run))
            await wait_until(pilot, lambda r=run: log.path.parent.name == r and log.lines)
            await pilot.pause()
            assert pane_fits(log), (width, sorted({line.cell_length for line in log.lines}))
        await wait_until(pilot, complete)
        await wait_until(pilot, lambda: log.show_vertical_scrollbar)
        assert pane_fits(log), (width, sorted({line.cell_length for line in log.lines}))
        for size in ((100, 30), (70, 24)):
            await pilot.resize_terminal(*size)
            await wait_until(pilot, lambda w=width: log.scrollable_content_region.width != w)
            width = log.scrollable_content_region.width
            await wait_until(pilot, lambda: pane_fits(log) and complete(),
                             what=lambda: sorted({line.cell_length for line in log.lines}))  # fmt: skip
            assert max(line.cell_length for line in log.lines) == width  # wrapped to it


# -- compare ---------------------------------------------------------------------------
async def test_compare_shows_a_column_per_run_at_80x24(sweep_runs, profiles_dir):
    app = make_app(sweep_runs, profiles_dir)
    async with app.run_test(size=SMALL) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 4 and table.selected == SWEEP_RUN)
        await pilot.press("space", "space", "space")  # sweep, smoke, failed (space moves down)
        assert len(app.marked) == 3
        await pilot.press("c")
        await wait_until(pilot, lambda: app.current_mode == "compare")
        results = app.screen.query_one("#results", DataTable)
        diff = app.screen.query_one("#diff", DataTable)
        await wait_until(pilot, lambda: len(results.columns) == 4 and diff.row_count > 0)
        for t in (results, diff):
            await wait_until(pilot, lambda t=t: len(visible_columns(t)) == len(t.columns),
                             what=lambda t=t: f"{t.id}: {spans(t)} in {t.scrollable_content_region}")  # fmt: skip
            assert len(t.columns) == 4  # the label column and one per run
        labels = row_labels(results)[1:]
        assert labels[0].startswith("smoke-") and "…" in labels[0]  # elided, not cut
        assert [str(c) for c in results.get_row("method")][1:] == ["simclr"] * 3


# -- the keys dialog -------------------------------------------------------------------
async def settled(screen, pilot) -> list:
    """The regions of ``screen``'s charts once a few frames in a row left them unchanged: the
    runs table may still grow by a row or two after its rows arrive (seen on a loaded
    machine), and that is not the dialog's doing."""
    stable, last = 0, None
    for _ in range(200):
        now = [c.region for c in screen.query(MetricChart) if c.display]
        stable = stable + 1 if now == last else 0
        if stable >= 3:
            return now
        last = now
        await pilot.pause(0.05)
    raise AssertionError(f"chart layout never settled: {last}")


async def test_keys_dialog_lies_over_the_charts_and_names_the_figures_folder(
    runs_dir, profiles_dir, tmp_path
):
    from sslterm.tui.screens.dialogs import KeysScreen

    app = make_app(runs_dir, profiles_dir, figures_dir=tmp_path / "figs")
    async with app.run_test(size=SMALL) as pilot:
        runs = app.screen
        await wait_until(pilot, lambda: runs.query_one(RunsTable).row_count == 3)
        charts = [c for c in runs.query(MetricChart) if c.display]
        await wait_until(pilot, lambda: all(c.size.width > 20 for c in charts))
        before = await settled(runs, pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, KeysScreen))
        assert await settled(runs, pilot) == before  # the view keeps its layout
        keys = app.screen.query_one("#keys", DataTable)
        rows = [tuple(str(c) for c in keys.get_row_at(i)) for i in range(keys.row_count)]
        assert rows[:3] == [("s", "Stop"), ("k", "Kill"), ("r", "Resume")]  # the view's first
        assert {("o", "Columns…"), ("f", "Save figure"), ("z", "Zoom in")} <= set(rows)
        notes = " ".join(widget_text(n) for n in app.screen.query(".hint"))
        assert str(tmp_path / "figs") in notes and "SSLTERM_FIGURES" in notes
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: app.screen is runs)


# -- the composer ----------------------------------------------------------------------
async def open_composer(pilot, app: SSLTermApp) -> ComposerScreen:
    await pilot.press("2")
    await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
    return app.screen


async def test_composer_help_texts_keep_their_square_brackets(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_composer(pilot, app)
        assert screen.open_path(profiles_dir / "smoke.toml")
        screen.edit_field("model.method")
        await wait_until(pilot, lambda: screen.editor.spec.key == "model.method")
        sections = "([simclr], [byol], [mocov3], [simsiam], [barlowtwins], [vicreg], [dino])"
        assert sections in widget_text(screen.query_one("#field-help"))
        assert "(, , ," not in widget_text(screen.query_one("#field-help"))
        note = str(screen.query_one(FieldTable).get_cell("model.method", "note"))
        assert "same name ([simclr]" in note


@pytest.mark.parametrize("size", [(120, 40), SMALL])
async def test_method_dropdown_opens_clear_of_the_help_and_the_footer(
    runs_dir, profiles_dir, size
):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=size) as pilot:
        screen = await open_composer(pilot, app)
        screen.edit_field("model.method")
        select = screen.query_one("#edit-select", Select)
        await wait_until(pilot, lambda: select.has_focus)
        await pilot.press("enter")
        overlay = select.query_one(SelectOverlay)
        await wait_until(pilot, lambda: select.expanded and overlay.region.height > 2)
        await pilot.pause()
        drop = overlay.region
        assert drop.height >= 8  # every method shows
        for other in (screen.query_one("#field-help"), screen.query_one(Footer)):
            assert not drop.overlaps(other.region), (drop, other.id, other.region)
        await pilot.press("down", "down", "enter")  # past the blank (default) line
        await wait_until(pilot, lambda: not select.expanded)
        await wait_until(pilot, lambda: get_value(screen.doc, "model.method") == select.value)
        assert select.value in ("simclr", "byol")


async def test_an_edit_typed_while_the_path_check_runs_is_never_lost(
    runs_dir, profiles_dir, monkeypatch
):
    """The data-path check (a child process, here a stand-in that waits) comes back while
    the user types, and a late 'row highlighted' re-shows the field meanwhile: what the
    user typed stays, in the field and in the document."""
    import sslterm.tui.checks as checks
    from sslterm.errors import ProfileError

    started, release = [], threading.Event()

    def slow_check(text, shown, cancelled=lambda: False, timeout=0.0):
        started.append(text)
        while not release.wait(0.02):
            if cancelled():
                return None
        return ProfileError(shown, 4, "data.root", "folder not found")

    monkeypatch.setattr(checks, "check_environment", slow_check)
    app = make_app(runs_dir, profiles_dir, env_check_delay=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_composer(pilot, app)
        assert screen.open_path(profiles_dir / "smoke.toml")
        await wait_until(pilot, lambda: started)  # the check runs (and waits)
        fields = screen.query_one(FieldTable)
        editor = screen.query_one("#edit-input")
        screen.edit_field("train.epochs")
        await wait_until(pilot, lambda: editor.has_focus and editor.value == "3")
        await pilot.press("end", "ctrl+u")  # cleared: the document still says 3
        key = next(k for k in fields.rows if k.value == "train.epochs")
        late = FieldTable.RowHighlighted(fields, fields.get_row_index(key), key)
        fields.post_message(late)  # a late message for the same row
        await pilot.pause()
        await pilot.press("1")
        release.set()  # the check's answer arrives mid-typing
        await wait_until(pilot, lambda: not screen.env_checking)
        await pilot.press("2")
        await wait_until(pilot, lambda: format_value(get_value(screen.doc, "train.epochs")) == "12",
                         what=lambda: f"doc {get_value(screen.doc, 'train.epochs')!r}, field {editor.value!r}")  # fmt: skip
        assert editor.value == "12"
        assert fields.error_key == "data.root"  # the check's answer is shown...
        assert str(fields.get_cell("train.epochs", "value")) == "12"  # ...and the edit kept


# -- small lies ------------------------------------------------------------------------
async def test_log_scale_of_values_that_are_all_zero_says_why(tmp_path, profiles_dir):
    out = tmp_path / "runs"
    run = write_run(out, "zero-20240501-120000", state="finished", start=T0, lr=0.0,
                    epochs=2, done_epochs=2)  # fmt: skip  (a learning rate of 0 throughout)
    app = make_app(out, profiles_dir)
    async with app.run_test(size=(130, 40)) as pilot:
        lr = app.screen.query_one("#chart-lr", MetricChart)
        await wait_until(pilot, lambda: run.name in app.index.runs and lr.points > 0)
        lr.focus()
        await pilot.press("y")
        await wait_until(pilot, lambda: lr.log_y and "(log)" in lr.drawn_title)
        assert lr.drawn_title.endswith("log scale: values <= 0")
        assert "no data yet" not in lr.drawn_title
        await pilot.press("y")
        await wait_until(pilot, lambda: lr.drawn_title == "learning rate")


DETAIL_SOURCE = """\
name = "detail"
[data]
dataset = "cifar10"
[model]
encoder = "resnet18"
[train]
epochs = 10
base_lr = 0.3
"""
DETAIL_FROZEN = """\
name = "detail"
[data]
dataset = "cifar10"
[model]
encoder = "resnet18"
temperature = 0.1
[train]
epochs = 10
base_lr = 0.5
[byol]
momentum_start = 0.99
projector_dim = 256
"""


async def test_detail_view_marks_only_keys_that_differ_from_the_source(
    tmp_path, profiles_dir
):
    """Keys the source profile lacks (another method's section, the old [model] layout)
    that hold their default are no difference; one real difference is "1 key differs"."""
    out = tmp_path / "runs"
    run = write_run(out, "detail-20240501-120000", state="finished", start=T0)
    (run / "profile.toml").write_text(DETAIL_FROZEN)
    (profiles_dir / "detail.toml").write_text(DETAIL_SOURCE)
    app = make_app(out, profiles_dir)
    async with app.run_test(size=SMALL) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: getattr(app.screen, "details", None) is not None)
        text = widget_text(app.screen.query_one("#detail-profile"))
        assert f"● 1 key differs from {profiles_dir / 'detail.toml'}" in text
        assert "● train.base_lr = 0.5 (source: 0.3)" in text
        assert text.count("●") == 2  # the count and that key
        assert "model.temperature = 0.1" in text and "byol.momentum_start = 0.99" in text
        assert "source: —" not in text and "not set" not in text


async def test_compare_says_one_key_differs(tmp_path, profiles_dir):
    out = tmp_path / "runs"
    write_run(out, "same-20240501-120000", state="finished", start=T0, lr=0.3)
    write_run(out, "same-20240501-130000", state="finished", start=T0 + 3600, lr=0.6)
    app = make_app(out, profiles_dir)
    async with app.run_test(size=(130, 40)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        await pilot.press("space", "space", "c")
        await wait_until(pilot, lambda: app.current_mode == "compare")
        diff = app.screen.query_one("#diff", DataTable)
        await wait_until(pilot, lambda: diff.row_count == 1)
        assert widget_text(app.screen.query_one("#diff-title")) == "1 profile key differs"


async def test_f_saves_where_the_setting_says_and_names_the_full_path(
    runs_dir, profiles_dir, tmp_path, monkeypatch
):
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("SSLTERM_FIGURES", str(tmp_path / "paper" / "figs"))
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(130, 40)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 3 and app.index.runs[table.selected].events)
        await pilot.press("f")
        out = tmp_path / "paper" / "figs" / f"loss-{table.selected}.svg"
        await wait_until(pilot, lambda: f"saved {out}" in notices(app), timeout=60,
                         what=lambda: notices(app))  # fmt: skip
    assert out.is_file() and not (here / "figures").exists()


# -- the pure parts ----------------------------------------------------------------------
def test_elide_keeps_the_start_and_the_time_of_day():
    from sslterm.tui.format import elide, plural

    assert elide(SWEEP_RUN, 46) == SWEEP_RUN
    assert elide(SWEEP_RUN, 20) == "smoke-base_l…-120000"
    assert elide(SWEEP_RUN, 10) == "smo…120000"  # the tail first: it tells runs apart
    assert elide(SWEEP_RUN, 4) == "smo…" and elide(SWEEP_RUN, 1) == "…"
    assert all(len(elide(SWEEP_RUN, w)) == w for w in range(1, 46))
    assert (plural(1, "key"), plural(2, "key"), plural(0, "epoch")) == ("1 key", "2 keys", "0 epochs")


def test_fit_widths_elides_the_run_id_until_the_numbers_fit():
    from sslterm.tui.widgets.runs_table import COLUMNS, WHEN_FILLED, fit_widths

    order = [k for k, _ in COLUMNS if k not in WHEN_FILLED]  # runs without labels or tags
    natural = dict.fromkeys(order, 6) | {"mark": 1, "run": 46, "linear": 11, "profile": 31}
    wide = fit_widths(order, natural, 500)
    assert wide == natural
    narrow = fit_widths(order, natural, 100)
    core = order[: order.index("linear") + 1]
    assert sum(narrow[k] + 2 for k in core) == 100 and narrow["run"] == 34
    assert {k: v for k, v in narrow.items() if k != "run"} == {
        k: v for k, v in natural.items() if k != "run"
    }  # only the id gives way
    assert fit_widths(order, natural, 60)["run"] == ELIDE_MIN["run"]  # never below its minimum
    assert fit_widths(order, natural, 0) == natural  # not laid out yet


def test_compare_columns_share_the_width():
    from sslterm.tui.screens.compare import share_widths

    assert share_widths(200, 21, [46, 23, 23]) == (21, [46, 23, 23])
    label, runs = share_widths(56, 21, [46, 23, 23])
    assert label + 2 + sum(w + 2 for w in runs) <= 56 and min(runs) >= 8
    assert share_widths(30, 21, [46] * 5)[1] == [8] * 5  # too many: they scroll
