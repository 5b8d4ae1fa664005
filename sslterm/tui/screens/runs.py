"""The runs view: every run, the selected one's charts, log and error; run control."""

from __future__ import annotations

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from sslterm.errors import UserError
from sslterm.runs.query import GROUP_KEYS, Term, group_runs, matches, parse_filter
from sslterm.runs.summary import NOISY, RunSummary, metric_title
from sslterm.tui import format as fmt
from sslterm.tui.notes import notify_plain
from sslterm.tui.screens.dialogs import ConfirmScreen
from sslterm.tui.widgets.charts import Line, MetricChart, window_label, zoom
from sslterm.tui.widgets.log_tail import LogTail
from sslterm.tui.widgets.modebar import ModeBar
from sslterm.tui.widgets.runs_table import RunsTable

CHARTS = (
    ("chart-loss", "loss", (("loss", "train"), ("val_loss", "val"))),
    ("chart-lr", "learning rate", (("lr", ""),)),
    ("chart-ips", "throughput (img/s)", (("ips", ""),)),
    ("chart-acc", "accuracy %", (("knn", "kNN"), ("linear", "linear"))),
)
CHART_IDS = tuple(c[0] for c in CHARTS)
FIXED = frozenset(m for _, _, metrics in CHARTS for m, _ in metrics)
Page = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
"""A page of charts: (title, ((metric, label), ...)) per chart."""
SECONDARY = ("chart-lr", "chart-ips")
"""Charts dropped when there is room for one row only (loss and accuracy stay)."""
CHART_ROWS = 7
"""Height a chart needs for its title, a plot, tick labels and the axis name."""


def chart_pages(metrics: list[str], n: int = len(CHART_IDS)) -> list[Page]:
    """The fixed four charts, then every other series a run logs (methods add their
    own), ``n`` single-metric charts a page, in the order they first appeared."""
    first: Page = tuple((title, lines) for _, title, lines in CHARTS)
    others = [m for m in metrics if m not in FIXED]
    return [first] + [
        tuple((metric_title(m), ((m, ""),)) for m in others[i : i + n])
        for i in range(0, len(others), n)
    ]


def page_of(pages: list[Page], metric: str) -> int:
    """The page that charts ``metric`` (0 when none does)."""
    for i, page in enumerate(pages):
        if any(metric == m for _, lines in page for m, _ in lines):
            return i
    return 0


class ChartGrid(Grid):
    """Two rows of charts, or one when two would be squashed (a short terminal, an
    error banner): squashed charts draw titles and tick labels over each other."""

    def on_resize(self, event: events.Resize) -> None:
        one_row = event.size.height < 2 * CHART_ROWS
        if one_row != self.has_class("-one-row"):
            self.set_class(one_row, "-one-row")
            self.post_message(self.Reshaped())

    class Reshaped(Message):
        """Rows came or went: the pages of charts change size."""

    @property
    def slots(self) -> tuple[int, ...]:
        """The charts shown: all four, or in one row the first and the last."""
        return (0, 3) if self.has_class("-one-row") else (0, 1, 2, 3)


class FilterInput(Input):
    """The runs filter; escape clears it and gives the table the keys back."""

    BINDINGS = [Binding("escape", "clear_filter", "Clear filter")]

    class Cleared(Message):
        """Escape: no filter any more."""

    def action_clear_filter(self) -> None:
        self.value = ""
        self.post_message(self.Cleared())


class RunsScreen(Screen):
    """Keys act on the highlighted run; charts and log follow the highlight."""

    AUTO_FOCUS = "#runs"

    # the footer shows what fits in 80 columns; '?' and the palette list every key
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("k", "kill", "Kill"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Delete", show=False),
        Binding("a", "again", "Again…", show=False),
        Binding("space", "mark", "Mark", key_display="␣"),
        Binding("c", "compare", "Compare", show=False),
        Binding("e", "toggle_ema", "EMA"),
        Binding("x", "cycle_axis", "Axis"),
        Binding("l", "toggle_log", "Log", show=False),
        Binding("o", "pick_columns", "Columns…", show=False),
        Binding("slash", "filter", "Filter", key_display="/", show=False),
        Binding("g", "cycle_group", "Group by", show=False),
        Binding("t", "edit_meta", "Label/tags/note…", show=False),
        Binding("m", "pick_metric", "Metrics…", show=False),
        Binding("f", "save_figure", "Save figure", show=False),
        Binding("n", "page(1)", "Next charts", show=False),
        Binding("p", "page(-1)", "Previous charts", show=False),
        Binding("z", "zoom(1)", "Zoom in", show=False),
        Binding("Z", "zoom(-1)", "Zoom out", show=False),
    ]

    _banner = ""
    _shown = 0
    """How many series the selected run had when the charts were set up (a new one: new pages)."""
    page = 0
    window = 1.0
    """Share of the x-range the charts show (the last part); ``z``/``Z`` change it."""
    cursor: float | None = None
    """The charts' cursor x (None: off); the arrow keys move it on a focused chart."""
    terms: list[Term] = []
    """The filter (``/``) the table shows, parsed (:mod:`sslterm.runs.query`)."""
    group: str | None = None
    """The key rows are grouped by (``g``; None: not grouped)."""
    _typing = False
    """The filter was opened (``/``) and not yet left (enter, escape)."""

    def compose(self) -> ComposeResult:
        yield ModeBar("runs")
        with Horizontal(id="filter-bar"):
            yield FilterInput(placeholder="filter: words, key=value, linear>50 (escape: clear)",
                              id="runs-filter", compact=True)
            yield Static(id="filter-state")
        yield RunsTable(id="runs", columns=self.app.runs_columns)
        yield Static(id="error-banner")
        with Horizontal(id="detail"):
            with Vertical(id="chart-pane"):
                yield Static(id="chart-state")
                with ChartGrid(id="charts"):
                    for chart_id, title, _ in CHARTS:
                        secondary = "secondary" if chart_id in SECONDARY else None
                        yield MetricChart(title, id=chart_id, classes=secondary)
            yield LogTail(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # every new log line re-lays out the screen (the log's scroll size grows): 2 s is
        # live enough for a tail and keeps following a run cheap
        self.set_interval(2.0, self.query_one(LogTail).poll)
        self.runs_updated()

    def on_screen_resume(self) -> None:
        self.runs_updated()

    # -- data -----------------------------------------------------------------------------
    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    @property
    def selected(self) -> RunSummary | None:
        rid = self.table.selected
        return self.app.index.runs.get(rid) if rid else None

    def shown_runs(self) -> tuple[list[RunSummary], dict[str, str]]:
        """The runs the table shows, in order, and the group names of the groups' first rows."""
        runs = [s for s in self.app.index.ordered() if matches(s, self.terms)]
        if self.group is None:
            return runs, {}
        grouped = group_runs(runs, self.group)
        return [s for _, members in grouped for s in members], {
            members[0].id: name for name, members in grouped}

    def runs_updated(self) -> None:
        """Called by the app after each poll of the run directories."""
        table = self.table
        before = table.selected
        runs, groups = self.shown_runs()
        table.sync(runs, self.app.marked, groups=groups)
        self._update_filter_state(len(runs))
        want = self.app.want_selected
        if want is not None and want in self.app.index.runs:
            self.app.want_selected = None
            table.move_cursor(row=table.get_row_index(want), animate=False)
        s = self.selected
        if table.selected != before or before is None or (s and len(s.series) != self._shown):
            self.show_selected()
        else:
            self._update_banner()
            self._update_note()
            self.query_one(LogTail).show_notes()

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self) -> None:
        self.cursor = None
        self.show_selected()

    @on(MetricChart.CursorMoved)
    def _cursor_moved(self, event: MetricChart.CursorMoved) -> None:
        self.cursor = event.x
        if event.x is None:
            self.table.focus()
        self.show_selected()

    def pages(self) -> list[Page]:
        s = self.selected
        n = len(self.query_one(ChartGrid).slots)
        if s is None:
            return chart_pages([], n)
        with s.lock:
            return chart_pages(list(s.series), n)

    @on(ChartGrid.Reshaped)
    def _reshaped(self) -> None:
        self.page = 0
        self.show_selected()

    def show_selected(self) -> None:
        s = self.selected
        self._shown = len(s.series) if s else 0
        pages = self.pages()
        self.page = min(self.page, len(pages) - 1)
        page = dict(enumerate(pages[self.page]))
        if self.page:  # the extra pages fill the charts that are shown
            page = dict(zip(self.query_one(ChartGrid).slots, page.values(), strict=False))
        for i, chart_id in enumerate(CHART_IDS):
            chart = self.query_one(f"#{chart_id}", MetricChart)
            title, metrics = page.get(i, ("", ()))
            chart.title = title
            chart.set_class(not metrics, "-unused")
            lines = [Line(s, m, label) for m, label in metrics] if s else []
            chart.show(lines, self.app.axis, self.app.smoothing, self.window, self.cursor)
        self.query_one(LogTail).follow(s)
        self.query_one("#chart-state", Static).update(self._chart_state(len(pages)))
        self._update_banner()
        self._update_note()

    def _chart_state(self, pages: int) -> str:
        """What the charts show; the cursor first (it changes as you read)."""
        parts = [] if self.cursor is None else [f"▸ {self.app.axis} {self.cursor:.6g}"]
        if self.window < 1.0:
            parts.append(window_label(self.window))
        if pages > 1:
            parts.append(f"charts {self.page + 1}/{pages}")
        parts.append(f"x: {self.app.axis} · {self.app.ema_label} on loss and img/s")
        return " · ".join(parts)

    def _update_note(self) -> None:
        s = self.selected
        what = f" · {s.encoder} on {s.dataset}" if s and s.encoder else ""
        self.query_one(ModeBar).note = (
            f"{s.id}{what}{' (resumed)' if s.resumed else ''} · x: {self.app.axis}"
            f" · {self.app.ema_label}"
            if s
            else "no run matches the filter (escape in the filter clears it)"
            if self.app.index.runs
            else f"no runs in {self.app.index.output_dir} — press 2 to compose and launch one"
        )

    def _update_banner(self) -> None:
        s = self.selected
        banner = self.query_one("#error-banner", Static)
        text = ""
        if s is not None and s.state == "failed":
            text = f"✗ {s.id} failed: {s.error or 'no error summary'}"
            tb = [ln for ln in s.traceback.splitlines() if ln.strip()][-4:]
            if tb:
                text += "\n" + "\n".join(tb)
        elif s is not None and s.state == "stopped" and s.error:
            text = f"■ {s.id} stopped: {s.error}"
        if text != self._banner:  # an update re-lays out the screen: only on change
            self._banner = text
            banner.update(Text(text))  # an error's text, never markup
            banner.set_class(bool(text), "-visible")

    # -- finding runs -----------------------------------------------------------------------
    def _update_filter_state(self, shown: int, error: str = "") -> None:
        bar = self.query_one("#filter-bar")
        state = self.query_one("#filter-state", Static)
        text = self.query_one(FilterInput).value
        parts = []
        if text.strip() or error:
            parts.append(f"{shown} of {fmt.plural(len(self.app.index.runs), 'run')}")
        if self.group is not None:
            parts.append(f"grouped by {self.group}")
        state.update(Text(error or " · ".join(parts)))
        state.set_class(bool(error), "-error")
        bar.set_class(bool(parts or error) or self._typing, "-visible")

    def action_filter(self) -> None:
        """Show the filter and type into it; the table follows each keystroke."""
        self._typing = True
        self.query_one("#filter-bar").set_class(True, "-visible")
        self.query_one(FilterInput).focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        try:
            self.terms = parse_filter(event.value, "filter")
        except UserError as exc:  # keep the last good filter while the user types on
            self._update_filter_state(self.table.row_count, str(exc))
            return
        self.runs_updated()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        self._typing = False
        self.table.focus()
        self.runs_updated()

    @on(FilterInput.Cleared)
    def _filter_cleared(self) -> None:
        self.terms = []
        self._typing = False
        self.table.focus()
        self.runs_updated()

    def action_cycle_group(self) -> None:
        keys = [None, *GROUP_KEYS]
        self.group = keys[(keys.index(self.group) + 1) % len(keys)]
        self.runs_updated()
        notify_plain(self, f"grouped by {self.group}" if self.group else "not grouped")

    def action_edit_meta(self) -> None:
        """The highlighted run's label, tags and note (stored in its meta.json)."""
        from sslterm.tui.screens.dialogs import MetaScreen

        s = self._need_run()
        if s is None:
            return

        def edited(values: tuple[str, str, str] | None) -> None:
            if values is not None:
                self._save_meta(s, *values)

        self.app.push_screen(MetaScreen(s.id, s.label, s.tags, s.note), edited)

    @work(thread=True, group="meta")
    def _save_meta(self, s: RunSummary, label: str, tags: str, note: str) -> None:
        from sslterm.runs.meta import edit_meta

        try:
            edit_meta(s.run, label=label, tags=tags.replace(",", " ").split(), note=note)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(notify_plain, self, str(exc), severity="error", timeout=8)
            return
        self.app.call_from_thread(notify_plain, self, f"{s.id}: label, tags and note saved")
        self.app.call_from_thread(self.app.poll)

    # -- actions ----------------------------------------------------------------------------
    def _need_run(self) -> RunSummary | None:
        s = self.selected
        if s is None:
            self.notify("no run selected", severity="warning")
        return s

    @work(thread=True, group="control")
    def _control(self, what: str, s: RunSummary) -> None:
        from sslterm.runs import launcher

        try:
            getattr(launcher, what)(s.run)
        except UserError as exc:
            self.app.call_from_thread(notify_plain, self, str(exc), severity="error", timeout=8)
            return
        done = {
            "request_stop": "stop requested",
            "kill_run": "killed",
            "resume_run": "resumed",
            "delete_run": "deleted",
        }
        self.app.call_from_thread(notify_plain, self, f"{s.id}: {done[what]}")
        self.app.call_from_thread(self.app.poll)

    def action_stop(self) -> None:
        if s := self._need_run():
            self._control("request_stop", s)

    def action_resume(self) -> None:
        if s := self._need_run():
            self._control("resume_run", s)

    def action_kill(self) -> None:
        s = self._need_run()
        if s is None:
            return
        if not s.alive:
            notify_plain(self, f"{s.id} is not running ({s.state})", severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._control("kill_run", s)

        self.app.push_screen(
            ConfirmScreen(f"Kill {s.id}? Work since its last checkpoint is lost."), answer
        )

    def action_delete(self) -> None:
        s = self._need_run()
        if s is None:
            return
        if s.alive:
            notify_plain(self, f"{s.id} is {s.state}; stop it before deleting", severity="error")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.app.marked.discard(s.id)
                self._control("delete_run", s)

        self.app.push_screen(
            ConfirmScreen(f"Delete {s.id} and everything in {s.run.path}?"), answer
        )

    async def action_again(self) -> None:
        """Open the run's frozen profile in the composer as a new, unsaved profile."""
        s = self._need_run()
        if s is None:
            return
        try:
            text = s.run.profile.read_text(encoding="utf-8")
        except OSError as exc:
            notify_plain(self, f"cannot read {s.run.profile}: {exc}", severity="error")
            return
        await self.app.switch_mode("composer")
        self.app.screen.open_text(text, stem=s.profile or s.id, origin=str(s.run.profile))

    def action_mark(self) -> None:
        s = self._need_run()
        if s is None:
            return
        marked = self.app.marked
        marked.symmetric_difference_update({s.id})
        self.table.set_mark(s.id, s.id in marked)
        self.table.action_cursor_down()

    async def action_compare(self) -> None:
        if not self.app.marked and self.selected:
            self.app.marked.add(self.selected.id)
        await self.app.switch_mode("compare")

    def action_toggle_ema(self) -> None:
        self.app.cycle_smoothing()
        self.show_selected()

    def action_cycle_axis(self) -> None:
        self.app.cycle_axis()
        self.show_selected()

    def action_zoom(self, by: int) -> None:
        self.window = zoom(self.window, by)
        self.cursor = None
        self.show_selected()

    def action_page(self, by: int) -> None:
        self.page = (self.page + by) % len(self.pages())
        self.cursor = None
        self.show_selected()

    def action_pick_metric(self) -> None:
        """Every series of the highlighted run, to jump to the page that charts it."""
        from sslterm.tui.screens.dialogs import MetricPicker

        s = self._need_run()
        if s is None:
            return
        with s.lock:
            choices = [(m, metric_title(m), series.value[-1]) for m, series in s.series.items()
                       if len(series)]  # fmt: skip

        def picked(metric: str | None) -> None:
            if metric is not None:
                pages = self.pages()
                self.page = page_of(pages, metric)
                self.show_selected()
                for chart in self.query(MetricChart):
                    if any(line.metric == metric for line in chart.lines):
                        chart.focus()

        self.app.push_screen(MetricPicker(choices), picked)

    def action_save_figure(self) -> None:
        """The focused chart's first metric (else the loss) of the highlighted run, as SVG."""
        from sslterm.tui.figures import save_chart

        s = self._need_run()
        if s is None:
            return
        chart = self.focused if isinstance(self.focused, MetricChart) else None
        lines = chart.lines if chart is not None else ()
        metric = lines[0].metric if lines else "loss"
        smoothing = self.app.smoothing if metric in NOISY else 0.0
        save_chart(self, [s.run], metric, self.app.axis, smoothing, self.app.figures_dir)

    def action_detail(self) -> None:
        """The highlighted run's details (enter)."""
        from sslterm.tui.screens.detail import DetailScreen

        if s := self._need_run():
            self.app.push_screen(DetailScreen(s))

    def action_pick_columns(self) -> None:
        """Choose the runs table's columns; the choice holds until the app closes."""
        from sslterm.tui.screens.dialogs import ColumnPicker
        from sslterm.tui.widgets.runs_table import ALWAYS, COLUMNS, WHEN_FILLED

        # label, tags and group show by themselves, when some row has them
        offered = [(key, label) for key, label in COLUMNS if key not in (*ALWAYS, *WHEN_FILLED)]

        def picked(keys: tuple[str, ...] | None) -> None:
            if keys is not None:
                self.app.runs_columns = keys
                self.table.show_columns(keys)

        self.app.push_screen(ColumnPicker(offered, self.table.shown), picked)

    def action_toggle_log(self) -> None:
        log = self.query_one(LogTail)
        log.display = not log.display
