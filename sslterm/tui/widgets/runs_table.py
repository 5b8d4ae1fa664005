"""The runs table: one row per run directory, updated cell by cell.

Long run ids (a sweep's are about 46 columns) are elided in the middle so that the
columns up to the linear eval fit the terminal; the full id is in the mode bar and the
run's detail view. Which columns show is the user's choice (:data:`COLUMNS`, the runs
view's ``o``); the run id and the mark always show."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from sslterm.runs.summary import RunSummary
from sslterm.tui import format as fmt

COLUMNS = (
    ("mark", " "),
    ("group", "group"),
    ("run", "run"),
    ("label", "label"),
    ("status", "status"),
    ("method", "method"),
    ("epoch", "epoch"),
    ("eta", "ETA"),
    ("loss", "loss"),
    ("knn", "kNN"),
    ("linear", "linear"),
    ("ips", "img/s"),
    ("tags", "tags"),
    ("profile", "profile"),
    ("created", "created"),
    ("duration", "trained"),
)
"""Every column, in the order shown; the profile is after the numbers (a run id starts
with its profile's name)."""
ALWAYS = ("mark", "run")
"""Columns that always show (the picker does not offer them)."""
WHEN_FILLED = ("group", "label", "tags")
"""Columns shown only while some row has text in them: no space lost on runs without
labels or tags, or when the table is not grouped (the picker does not offer them)."""
CORE = frozenset({"run", "status", "method", "epoch", "eta", "loss", "knn", "linear"})
"""Columns that should fit the width: long ids are elided until they do."""
ELIDE_MIN = {"run": 14, "label": 12}
"""Columns whose text may be elided, and their narrowest width."""
CELL_PAD = 2
"""Cells a column adds to its text (the DataTable's padding, one each side)."""


def shown_columns(keys: Iterable[str] | None) -> tuple[str, ...]:
    """The columns to show, in table order: ``keys`` (None: all) and the ones that always show."""
    wanted = set(ALWAYS) | (set(keys) if keys is not None else {k for k, _ in COLUMNS})
    return tuple(k for k, _ in COLUMNS if k in wanted)


def fit_widths(
    order: Sequence[str], natural: Mapping[str, int], room: int, pad: int = CELL_PAD
) -> dict[str, int]:
    """Column widths for ``room`` cells: the natural ones when all fit; otherwise the
    elidable columns (:data:`ELIDE_MIN`) give up what the columns up to the last
    :data:`CORE` one need, never below their minimum (the others scroll)."""
    out = {k: natural[k] for k in order}
    if room <= 0 or sum(w + pad for w in out.values()) <= room:
        return out
    last = max((i for i, k in enumerate(order) if k in CORE), default=len(order) - 1)
    excess = sum(out[k] + pad for k in order[: last + 1]) - room
    for key, least in ELIDE_MIN.items():
        if excess <= 0:
            break
        if key in out and order.index(key) <= last and out[key] > least:
            cut = min(excess, out[key] - least)
            out[key] -= cut
            excess -= cut
    return out

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
        "group": "",
        "run": s.id,
        "label": s.label,
        "tags": ", ".join(s.tags),
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
    too narrow lines. A column that must grow (or the width that changes) rebuilds
    the table (rare); every other change is a cell update, which neither re-measures
    nor re-lays out."""

    BINDINGS = [Binding("enter", "screen.detail", "Detail")]

    def __init__(self, *, id: str | None = None, columns: Iterable[str] | None = None) -> None:
        """``columns``: the keys of :data:`COLUMNS` to show (None: all)."""
        super().__init__(id=id)
        self.shown: tuple[str, ...] = shown_columns(columns)
        self._drawn: dict[str, int] = {}
        self._cells: dict[str, dict[str, object]] = {}
        self._natural: dict[str, int] = {}
        """Each column's widest text since the rows last changed (it only grows meanwhile)."""
        self._widths: dict[str, int] = {}
        """The widths the table was built with (elided where the room asks for it)."""
        self._labels: dict[str, str] = dict(COLUMNS)
        self.drawn_columns: tuple[str, ...] = tuple(k for k in self.shown if k not in WHEN_FILLED)
        """The shown columns less the empty ones of :data:`WHEN_FILLED`."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._build([], {})

    def on_resize(self) -> None:
        self._refit()

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return str(key.value)

    @property
    def room(self) -> int:
        """Cells the columns have (0: not laid out yet), less a vertical scrollbar's when the
        rows will overflow the height: the widths are fitted before the rows are added, when
        the table does not show that scrollbar yet (and no resize follows when it does)."""
        inner = self.region.shrink(self.styles.gutter)
        if inner.width <= 0:
            return 0
        lines = len(self._cells) + self.header_height + self.styles.scrollbar_size_horizontal
        return inner.width - (self.styles.scrollbar_size_vertical if lines > inner.height else 0)

    def show_columns(self, keys: Iterable[str] | None) -> None:
        """Show these columns (None: all), with the ones that always show."""
        shown = shown_columns(keys)
        if shown != self.shown:
            self.shown = shown
            self.drawn_columns = self._visible(self._ids())
            self._build(self._ids(), self._natural)

    def _visible(self, ids: Sequence[str]) -> tuple[str, ...]:
        return tuple(k for k in self.shown if k not in WHEN_FILLED
                     or any(self._cells[r][k] for r in ids if r in self._cells))

    def _ids(self) -> list[str]:
        return [str(k.value) for k in self.rows]

    def _fitted(self, natural: Mapping[str, int]) -> dict[str, int]:
        widths = {k: natural.get(k, len(self._labels[k])) for k in self.drawn_columns}
        return fit_widths(self.drawn_columns, widths, self.room)

    def _shown_cell(self, key: str, value: object) -> object:
        """What a cell shows: elidable text cut to its column's width."""
        width = self._widths.get(key)
        if key in ELIDE_MIN and isinstance(value, str) and width is not None:
            return fmt.elide(value, width)
        return value

    def _build(self, ids: list[str], natural: Mapping[str, int]) -> None:
        keep = self.selected
        self.clear(columns=True)
        self._natural = dict(natural)
        self._widths = self._fitted(natural)
        for key in self.drawn_columns:
            label = self._labels[key]
            self.add_column(fmt.elide(label, self._widths[key]), key=key, width=self._widths[key])
        for rid in ids:
            row = self._cells[rid]
            self.add_row(*(self._shown_cell(k, row[k]) for k in self.drawn_columns), key=rid)
        if keep in ids:
            self.move_cursor(row=ids.index(keep), animate=False)

    def _refit(self) -> None:
        """Rebuild when the room changed what fits."""
        if self._fitted(self._natural) != self._widths:
            self._build(self._ids(), self._natural)

    def sync(
        self,
        ordered: list[RunSummary],
        marked: set[str],
        now: float | None = None,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        """Bring the table up to date: rows whose summary changed since drawn, the
        clocks of live runs; a rebuild when runs came or went or a column must grow.
        ``groups``: run id -> the group name its row shows (the first row of a group)."""
        now = now or time.time()
        groups = groups or {}
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
        for s in ordered:
            group = groups.get(s.id, "")
            if self._cells[s.id]["group"] != group:
                self._cells[s.id]["group"] = group
                changed.append(s.id)
        for gone in set(self._cells) - set(ids):
            del self._cells[gone]
            self._drawn.pop(gone, None)
        drawn = self._visible(ids)
        if drawn != self.drawn_columns:
            self.drawn_columns = drawn
            relabel = True
        natural = {
            key: max([len(label), *(len(str(self._cells[r][key])) for r in ids)])
            for key, label in self._labels.items()
        }
        if relabel or ids != self._ids():
            self._build(ids, natural)
            return
        if any(natural[k] > self._natural.get(k, 0) for k in natural):
            self._build(ids, {k: max(w, self._natural.get(k, 0)) for k, w in natural.items()})
            return
        if self._fitted(self._natural) != self._widths:
            self._build(ids, self._natural)
            return
        for rid in changed:
            for key in self.drawn_columns:
                value = self._shown_cell(key, self._cells[rid][key])
                if str(self.get_cell(rid, key)) != str(value):
                    self.update_cell(rid, key, value)

    def set_mark(self, run_id: str, marked: bool) -> None:
        if run_id in self._cells:
            self._cells[run_id]["mark"] = "●" if marked else " "
        self.update_cell(run_id, "mark", "●" if marked else " ")
