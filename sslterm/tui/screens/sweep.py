"""Sweeps: each grid point's swept values, state and final metrics, sorted, best marked."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from sslterm.report.sweep_table import SweepRow, default_sort, metric_names, sweep_rows, table_cells
from sslterm.runs.sweep import Sweep, list_sweeps, sweep_status
from sslterm.tui.widgets.modebar import ModeBar


class SweepScreen(Screen):
    """The newest sweep first; ``[`` and ``]`` page through older ones."""

    BINDINGS = [
        Binding("s", "cycle_sort", "Sort by"),
        Binding("left_square_bracket", "page(-1)", "Older sweep", key_display="["),
        Binding("right_square_bracket", "page(1)", "Newer sweep", key_display="]"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sweeps: list[Sweep] = []
        self.shown: str | None = None
        """The sweep on screen (None: the newest, also once a new one starts)."""
        self.sort: str | None = None
        """The metric rows are sorted by (None: the sweep's default)."""
        self.rows: list[SweepRow] = []
        self._busy = False
        self._cells: tuple[list[str], list[list[str]]] | None = None
        """What the table shows: rebuilt only when it changes, so scrolling stays put."""

    def compose(self) -> ComposeResult:
        yield ModeBar("sweep")
        yield Static(id="sweep-title")
        yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.reload)
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        if self._busy or not self.is_current:
            return
        self._busy = True
        self._read(self.shown)

    @work(thread=True, group="sweep")
    def _read(self, shown: str | None) -> None:
        out = self.app.output_dir
        try:
            sweeps = list_sweeps(out)
            sweep = next((s for s in sweeps if s.id == shown), sweeps[-1] if sweeps else None)
            rows = sweep_rows(sweep_status(sweep, out)) if sweep else []
        finally:
            self._busy = False
        self.app.call_from_thread(self._show, sweeps, sweep, rows)

    def _show(self, sweeps: list[Sweep], sweep: Sweep | None, rows: list[SweepRow]) -> None:
        self.sweeps, self.rows = sweeps, rows
        title = self.query_one("#sweep-title", Static)
        table = self.query_one("#sweep-table", DataTable)
        if sweep is None:
            table.clear(columns=True)
            self._cells = None
            title.update("no sweeps yet — start one with: sslterm sweep PROFILE key=a,b key2=x,y"
                         " (or sslterm search PROFILE --space SPACE.toml)")
            return
        metric = self.sort if self.sort in metric_names(rows) else default_sort(rows)
        done = sum(r.state == "finished" for r in rows)
        page = f"{[s.id for s in sweeps].index(sweep.id) + 1}/{len(sweeps)}"
        by = f", sorted by {metric}" if metric else ""
        title.update(f"{sweep.kind} {sweep.id} ({page}): {done}/{len(rows)} finished{by}; "
                     "* marks the best")
        header, cells = table_cells(sweep, rows, metric)
        if self._cells == (header, cells):
            return
        self._cells = (header, cells)
        row = table.cursor_row
        table.clear(columns=True)
        table.add_columns(*header)
        for line in cells:
            table.add_row(*line)
        table.move_cursor(row=min(row, len(cells) - 1), animate=False)

    def action_cycle_sort(self) -> None:
        names = metric_names(self.rows)
        if not names:
            self.notify("no final metrics yet", severity="warning")
            return
        current = self.sort if self.sort in names else default_sort(self.rows)
        self.sort = names[(names.index(current) + 1) % len(names)]
        self.reload()

    def action_page(self, by: int) -> None:
        ids = [s.id for s in self.sweeps]
        if not ids:
            return
        at = ids.index(self.shown) if self.shown in ids else len(ids) - 1
        to = min(max(at + by, 0), len(ids) - 1)
        self.shown = None if to == len(ids) - 1 else ids[to]
        self.reload()
