"""Compare runs: one metric of each overlaid, their final results by protocol beside
it, and only the profile keys that differ."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, SelectionList, Static

from sslterm.profile.edit import differing_keys, format_value
from sslterm.runs.summary import METRICS, NOISY, RunSummary, final_table, metric_title
from sslterm.tui import format as fmt
from sslterm.tui.widgets.charts import Line, MetricChart, window_label, zoom
from sslterm.tui.widgets.modebar import ModeBar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METRIC_KEYS = tuple(METRICS)
PATH_KEYS = (
    ("data", "root"),
    ("data", "class_list"),
    ("launch", "output_dir"),
    ("launch", "accelerate_config"),
)
"""Profile keys that hold paths: ``./runs`` and ``runs`` name one folder."""


def normalise_paths(profile: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``profile`` whose path keys are written one way (so compare lists only
    real differences); empty values mean "not set" and stay empty."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in profile.items()}
    for section, key in PATH_KEYS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value:
            out[section][key] = os.path.normpath(value)
    return out


def metric_choices(runs: list[RunSummary]) -> list[str]:
    """The fixed metrics, then every other series any of ``runs`` logs (methods add
    their own), in the order they appear."""
    names = list(METRIC_KEYS)
    for s in runs:
        with s.lock:
            names += [m for m in s.series if m not in names]
    return names


def results_rows(
    runs: list[RunSummary], results: list[Any], groups: list[list[int]] | None = None
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Column heads and (row label, cells) for the final-results table: a column per run
    (its label, else its id), then one per seed group of two runs or more among them
    (``groups``: indices into ``runs``) with each number's mean ± std and n; rows: the
    method, then each protocol's numbers in the order they first appear (``—`` where a run
    lacks one)."""
    from sslterm.runs.groups import group_name, stat

    tables = [{(p, m): v for p, m, v in final_table(r)} for r in results]
    keys = list(dict.fromkeys(k for t in tables for k in t))
    groups = [g for g in groups or [] if len(g) > 1]
    heads = [s.name for s in runs]
    for g in groups:
        members = [runs[i] for i in g]
        name = group_name([s.name for s in members], [s.label for s in members],
                          [s.profile for s in members])
        heads.append(f"{name} (n={len(g)})")
    rows = [("method", [s.method or "—" for s in runs]
             + [runs[g[0]].method or "—" for g in groups])]
    for p, m in keys:
        cells = [fmt.number(t.get((p, m))) for t in tables]
        for g in groups:
            st = stat([tables[i][(p, m)] for i in g if (p, m) in tables[i]])
            cells.append("—" if st is None else st.text(2) + (f" n={st.n}" if st.n < len(g)
                                                             else ""))
        rows.append((f"{p} {m}", cells))
    return heads, rows


CELL_PAD = 2
"""Cells a DataTable column adds to its text."""
LEAST = 8
"""The narrowest a column of a run gets before the table scrolls."""


def share_widths(
    room: int, label: int, runs: list[int], pad: int = CELL_PAD, least: int = LEAST
) -> tuple[int, list[int]]:
    """Widths of a table's label column and of its one column per run: the natural ones
    (``label``, ``runs``) when they fit in ``room`` cells; otherwise the label column takes
    at most two fifths and the runs share the rest, each at least ``least`` wide (more runs
    than that fits scroll). ``room`` <= 0 (not laid out yet): the natural widths."""
    if room <= 0 or label + pad + sum(w + pad for w in runs) <= room:
        return label, list(runs)
    label = min(label, max(least, room * 2 // 5 - pad))
    each = max(least, (room - label - pad) // max(1, len(runs)) - pad)
    return label, [min(w, each) for w in runs]


def fill_table(
    table: DataTable, label: str, ids: list[str], rows: list[tuple[str, list[str]]]
) -> None:
    """``table`` anew: a label column headed ``label``, a column per run (headed by its id,
    elided to fit), ``rows`` of (label, one cell per run); every run's column fits the
    table's width where it can."""
    natural = [max([len(rid), *(len(v[i]) for _, v in rows)]) for i, rid in enumerate(ids)]
    first = max([len(label), *(len(k) for k, _ in rows)])
    inner = table.region.shrink(table.styles.gutter)  # with room for a scrollbar if it needs one
    bar = table.styles.scrollbar_size_vertical if len(rows) + 1 > inner.height else 0
    first, widths = share_widths(inner.width - bar, first, natural)
    table.clear(columns=True)
    table.add_column(Text(label), key="key", width=first)
    for i, (rid, width) in enumerate(zip(ids, widths, strict=True)):  # heads may repeat
        table.add_column(Text(fmt.elide(rid, width)), key=f"{i}:{rid}", width=width)
    for key, values in rows:
        cells = [fmt.elide(v, w, tail=w // 2) for v, w in zip(values, widths, strict=True)]
        table.add_row(Text(fmt.elide(key, first, tail=first // 2)), *map(Text, cells), key=key)


class CompareScreen(Screen):
    """Space picks runs in the list; the chart and the table follow the picks."""

    BINDINGS = [
        Binding("m", "cycle_metric", "Metric"),
        Binding("x", "cycle_axis", "X-axis"),
        Binding("e", "toggle_ema", "EMA"),
        Binding("f", "save_figure", "Save figure"),
        Binding("z", "zoom(1)", "Zoom in", show=False),
        Binding("Z", "zoom(-1)", "Zoom out", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.metric = "loss"
        self.window = 1.0
        self.cursor: float | None = None
        self._profiles: dict[str, dict[str, Any]] = {}
        self._results: dict[str, tuple[float, Any]] = {}
        self._listed: list[str] = []

    def compose(self) -> ComposeResult:
        yield ModeBar("compare")
        with Horizontal():
            yield SelectionList[str](id="compare-runs")
            with Vertical(id="compare-main"):
                yield MetricChart(METRICS[self.metric], id="compare-chart")
                yield DataTable(id="results", cursor_type="none", zebra_stripes=True)
                yield Static(id="diff-title")
                yield DataTable(id="diff", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#compare-runs").border_title = "runs (space: pick)"
        self.query_one("#results").border_title = "final results"
        self.runs_updated()
        self.call_after_refresh(self._show)  # laid out: the tables' columns fit the width

    def on_resize(self) -> None:
        if self.is_mounted:
            self._show()

    def on_screen_resume(self) -> None:
        self.runs_updated()

    @property
    def picked(self) -> list[str]:
        listed = self.query_one("#compare-runs", SelectionList)
        return [rid for rid in self._listed if rid in listed.selected]

    def runs_updated(self) -> None:
        ids = [s.id for s in self.app.index.ordered()]
        self.app.marked &= set(ids)
        listed = self.query_one("#compare-runs", SelectionList)
        if ids != self._listed:
            self._listed = ids
            with self.prevent(SelectionList.SelectedChanged):
                listed.clear_options()
                listed.add_options([(rid, rid, rid in self.app.marked) for rid in ids])
            self._show()
        elif set(listed.selected) != self.app.marked:
            with self.prevent(SelectionList.SelectedChanged):
                listed.deselect_all()
                for rid in self.app.marked:
                    listed.select(rid)
            self._show()

    @on(SelectionList.SelectedChanged)
    def _picked(self) -> None:
        self.app.marked = set(self.picked)
        self._show()

    def _show(self) -> None:
        runs = self.app.index.runs
        picked = [rid for rid in self.picked if rid in runs]
        chart = self.query_one(MetricChart)
        zoomed = f" · {window_label(self.window)}" if self.window < 1.0 else ""
        chart.title = (
            f"{metric_title(self.metric)} · x: {self.app.axis}{zoomed} · {self.app.ema_label}"
        )
        chart.show(
            [Line(runs[r], self.metric, runs[r].name) for r in picked],
            self.app.axis,
            self.app.smoothing,
            self.window,
            self.cursor,
        )
        self._show_results([runs[r] for r in picked])
        self._show_diff(picked)

    def _read_results(self, s: RunSummary) -> Any:
        """results.json of a run, read again only when it changed."""
        path = s.run.path / "results.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return {}
        cached = self._results.get(s.id)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                cached = (mtime, {})
            self._results[s.id] = cached
        return cached[1]

    def _show_results(self, picked: list[RunSummary]) -> None:
        table = self.query_one("#results", DataTable)
        from sslterm.runs.groups import seed_groups

        index = {s.id: i for i, s in enumerate(picked)}
        groups = [[index[s.id] for s in g] for g in seed_groups(picked, lambda s: s.run)]
        heads, rows = results_rows(picked, [self._read_results(s) for s in picked], groups)
        fill_table(table, "", heads, rows)

    @on(MetricChart.CursorMoved)
    def _cursor_moved(self, event: MetricChart.CursorMoved) -> None:
        self.cursor = event.x
        if event.x is None:
            self.query_one("#compare-runs").focus()
        self._show()

    def _profile(self, rid: str) -> dict[str, Any]:
        if rid not in self._profiles:
            try:
                self._profiles[rid] = tomllib.loads(
                    self.app.index.runs[rid].run.profile.read_text(encoding="utf-8")
                )
            except (OSError, ValueError, KeyError):
                return {}
        return self._profiles[rid]

    def _show_diff(self, picked: list[str]) -> None:
        table = self.query_one("#diff", DataTable)
        title = self.query_one("#diff-title", Static)
        if len(picked) < 2:
            table.clear(columns=True)
            title.update("Pick two or more runs (space) to see the profile keys that differ.")
            return
        diff = differing_keys([normalise_paths(self._profile(r)) for r in picked])
        n = len(diff)
        title.update(
            f"{fmt.plural(n, 'profile key')} {'differs' if n == 1 else 'differ'}"
            if diff
            else "The profiles are identical."
        )
        rows = [(key, ["—" if v is None else format_value(v) for v in values])
                for key, values in diff]  # fmt: skip
        fill_table(table, "key", picked, rows)

    def action_cycle_metric(self) -> None:
        runs = self.app.index.runs
        names = metric_choices([runs[r] for r in self.picked if r in runs])
        at = names.index(self.metric) if self.metric in names else -1
        self.metric = names[(at + 1) % len(names)]
        self.cursor = None
        self._show()

    def action_save_figure(self) -> None:
        """The overlay as SVG, EMA as on screen."""
        from sslterm.tui.figures import save_chart

        runs = self.app.index.runs
        picked = [runs[r].run for r in self.picked if r in runs]
        smoothing = self.app.smoothing if self.metric in NOISY else 0.0
        save_chart(self, picked, self.metric, self.app.axis, smoothing)

    def action_zoom(self, by: int) -> None:
        self.window = zoom(self.window, by)
        self.cursor = None
        self._show()

    def action_cycle_axis(self) -> None:
        self.app.cycle_axis()
        self._show()

    def action_toggle_ema(self) -> None:
        self.app.cycle_smoothing()
        self._show()
