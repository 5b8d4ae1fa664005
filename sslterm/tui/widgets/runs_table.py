"""The runs table: one row per run directory, updated cell by cell."""

from __future__ import annotations

import time

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from sslterm.runs.summary import RunSummary
from sslterm.tui import format as fmt

COLUMNS = (
    ("mark", " "),
    ("run", "run"),
    ("status", "status"),
    ("profile", "profile"),
    ("method", "method"),
    ("epoch", "epoch"),
    ("eta", "ETA"),
    ("loss", "loss"),
    ("knn", "kNN"),
    ("linear", "linear"),
    ("ips", "img/s"),
    ("created", "created"),
    ("duration", "trained"),
)

STATE_STYLE = {
    "running": "bold green",
    "stopping": "bold yellow",
    "queued": "cyan",
    "finished": "blue",
    "stopped": "yellow",
    "failed": "bold red",
}


def linear_header(runs: list[RunSummary]) -> str:
    """The linear column names its split when every run with a number has the same one;
    otherwise each cell names its own (see :func:`cells`)."""
    splits = {s.linear_split for s in runs if s.linear is not None}
    return f"linear {splits.pop()}" if len(splits) == 1 else "linear"


def cells(
    s: RunSummary, marked: bool, now: float | None = None, split_in_cell: bool = False
) -> dict[str, object]:
    """A run's row as column key -> cell; ``duration`` is training time over every resume,
    ``eta`` the time a live run still needs at its recent speed."""
    linear = fmt.percent(s.linear)
    if split_in_cell and s.linear is not None:
        linear = f"{linear} {s.linear_split}"
    return {
        "mark": "●" if marked else " ",
        "run": s.id,
        "status": Text(s.state, style=STATE_STYLE.get(s.state, "")),
        "profile": s.profile,
        "method": s.method or "—",
        "epoch": fmt.epochs(s.epoch, s.epochs),
        "eta": fmt.duration(s.eta(now)) if s.alive else "",
        "loss": fmt.number(s.last_loss),
        "knn": fmt.percent(s.knn),
        "linear": linear,
        "ips": fmt.rate(s.ips),
        "created": fmt.started(s.created or s.started),
        "duration": fmt.duration(s.duration(now)),
    }


class RunsTable(DataTable):
    """Rows keyed by run id, newest first; the cursor stays on its run across updates.

    Column widths are set here, from the cells, not measured by the DataTable: its
    measuring happens later, on idle, and rows drawn before it could keep stale,
    too narrow lines. A column that must grow rebuilds the table (rare); every
    other change is a cell update, which neither re-measures nor re-lays out."""

    BINDINGS = [Binding("enter", "screen.detail", "Detail")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._drawn: dict[str, int] = {}
        self._cells: dict[str, dict[str, object]] = {}
        self._widths: dict[str, int] = {}
        self._labels: dict[str, str] = dict(COLUMNS)

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._build([], {})

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return str(key.value)

    def _build(self, ids: list[str], widths: dict[str, int]) -> None:
        keep = self.selected
        self.clear(columns=True)
        for key, label in self._labels.items():
            self.add_column(label, key=key, width=widths.get(key, len(label)))
        for rid in ids:
            row = self._cells[rid]
            self.add_row(*(row[k] for k, _ in COLUMNS), key=rid)
        self._widths = widths
        if keep in ids:
            self.move_cursor(row=ids.index(keep), animate=False)

    def sync(self, ordered: list[RunSummary], marked: set[str], now: float | None = None) -> None:
        """Bring the table up to date: rows whose summary changed since drawn, the
        clocks of live runs; a rebuild when runs came or went or a column must grow."""
        now = now or time.time()
        ids = [s.id for s in ordered]
        header = linear_header(ordered)
        relabel = header != self._labels["linear"]
        if relabel:
            self._labels["linear"] = header
            self._drawn.clear()
        changed: list[str] = []
        for s in ordered:
            if self._drawn.get(s.id) != s.version or s.id not in self._cells:
                self._drawn[s.id] = s.version
                self._cells[s.id] = cells(s, s.id in marked, now, header == "linear")
                changed.append(s.id)
            elif s.alive:
                self._cells[s.id]["duration"] = fmt.duration(s.duration(now))
                self._cells[s.id]["eta"] = fmt.duration(s.eta(now))
                changed.append(s.id)
        for gone in set(self._cells) - set(ids):
            del self._cells[gone]
            self._drawn.pop(gone, None)
        widths = {
            key: max([len(label), *(len(str(self._cells[r][key])) for r in ids)])
            for key, label in self._labels.items()
        }
        current = [str(k.value) for k in self.rows]
        grown = any(widths[k] > self._widths.get(k, 0) for k in widths)
        if relabel or ids != current or grown:
            self._build(ids, widths)
            return
        for rid in changed:
            for key, value in self._cells[rid].items():
                if str(self.get_cell(rid, key)) != str(value):
                    self.update_cell(rid, key, value)

    def set_mark(self, run_id: str, marked: bool) -> None:
        if run_id in self._cells:
            self._cells[run_id]["mark"] = "●" if marked else " "
        self.update_cell(run_id, "mark", "●" if marked else " ")
