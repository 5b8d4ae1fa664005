"""Metric charts over textual-plotext that cost nothing while nothing changes.

A chart is told *what* to show (lines of series, x-axis, smoothing); it replots
on its own timer, only while its screen is shown and only when something it
shows changed: at once (within 1 / ``MAX_FPS`` s) after a change of view (run,
axis, EMA, size), at most every ``LIVE_INTERVAL`` s for new points of a live
run (a plotext build costs tens of milliseconds; training curves do not need
more). Data are downsampled to the widget width before plotext sees them, so a
million-point series draws as fast as a short one.

EMA smoothing bends only the noisy per-step series (:data:`~sslterm.runs.summary.NOISY`),
drawn over their raw values in grey; evaluations (val loss, kNN, linear) get a marker
per point, so a single one is seen; step and epoch axes are labelled in whole numbers.

Inspecting: a focused chart moves a cursor with the arrow keys and posts it
(:class:`MetricChart.CursorMoved`); its screen hands the cursor to every chart, which
draws it as a vertical line and puts the exact value of each of its lines at that x
in its title. ``y`` toggles a chart's log scale; the screen's x-range (the last part
of the run, :data:`WINDOWS`) applies to every chart.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding
from textual.message import Message
from textual_plotext import PlotextPlot

from sslterm.runs.summary import NOISY, RunSummary, metric_title
from sslterm.tui import format as fmt

MAX_FPS = 4.0
LIVE_INTERVAL = 2.0
_MARKERS = ("braille", "dot", "+", "x", "*", "o")
_COLORS = ("cyan", "orange", "green", "magenta", "red", "blue")
_AXIS_LABEL = {"step": "step", "epoch": "epoch", "time": "time"}
EVALUATIONS = frozenset({"val_loss", "knn", "linear"})
"""Series with a point per evaluation, not per step: each point gets a marker."""
RAW_COLOR = "gray"
POINT_MARKER = "●"
TICK_CELLS = 7
"""Room for one x tick label."""
WINDOWS = (1.0, 0.5, 0.25, 0.1, 0.05)
"""x-ranges ``z`` / ``Z`` step through: the last this share of the run (1 = all of it)."""
CURSOR_COLOR = "white"


def window_label(window: float) -> str:
    return "all" if window >= 1.0 else f"last {window:.0%}"


def zoom(window: float, by: int) -> float:
    """The next x-range in :data:`WINDOWS` (``by`` = +1: closer, -1: wider), clamped."""
    at = WINDOWS.index(window) if window in WINDOWS else 0
    return WINDOWS[min(len(WINDOWS) - 1, max(0, at + by))]


def whole_ticks(lo: float, hi: float, most: int) -> list[int]:
    """At most ``most`` round whole-number ticks within [lo, hi] (steps of 1, 2 or 5
    times a power of ten): a step or an epoch is never 12.5."""
    first, last = math.ceil(lo), math.floor(hi)
    if last < first:
        return []
    step = 1
    while len(ticks := range(math.ceil(first / step) * step, last + 1, step)) > max(1, most):
        step = _next_nice(step)
    return list(ticks)


def _next_nice(step: int) -> int:
    """1, 2, 5, 10, 20, 50, ..."""
    digits = 10 ** (len(str(step)) - 1)
    lead = step // digits
    return {1: 2, 2: 5, 5: 10}[lead] * digits


@dataclass(frozen=True)
class Line:
    """One drawn line: a metric of a run, with its legend label."""

    summary: RunSummary
    metric: str
    label: str


class MetricChart(PlotextPlot):
    """Plots :class:`Line` s; call :meth:`show` as often as you like."""

    DEFAULT_CSS = """
    MetricChart { min-height: 6; }
    MetricChart:focus { tint: $accent 12%; }
    """
    can_focus = True
    BINDINGS = [
        Binding("left", "cursor(-1)", "Cursor ←", show=False),
        Binding("right", "cursor(1)", "Cursor →", show=False),
        Binding("shift+left", "cursor(-10)", "Cursor ←←", show=False),
        Binding("shift+right", "cursor(10)", "Cursor →→", show=False),
        Binding("home", "cursor_to(0)", "Cursor to start", show=False),
        Binding("end", "cursor_to(1)", "Cursor to end", show=False),
        Binding("y", "toggle_log_y", "Log y"),
        Binding("escape", "leave", "Leave chart", show=False),
    ]

    class CursorMoved(Message):
        """The cursor's new x on the charts' axis (None: off)."""

        def __init__(self, x: float | None) -> None:
            super().__init__()
            self.x = x

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self._lines: tuple[Line, ...] = ()
        self._axis = "step"
        self._smoothing = 0.0
        self._window = 1.0
        self.cursor: float | None = None
        self.log_y = False
        self.x_range: tuple[float, float] | None = None
        """The x-range of the last replot (a cursor moves within it)."""
        self.readout: list[tuple[str, float | None]] = []
        """(label, value at the cursor) of each line, as the title shows them."""
        self._drawn_view: object = None
        self._drawn_data: object = None
        self._drawn_at = 0.0
        self.draws = 0
        """How many times this chart replotted (tests and benchmarks read it)."""
        self.points = 0
        """How many points the last replot drew."""
        self.plotted: list[tuple[str, str, list[float]]] = []
        """(metric, "raw" | "line" | "points", y values) of the last replot, as drawn."""
        self.xticks: list[int] = []
        self.drawn_title = ""
        """The title of the last replot, as drawn (readout and notes included)."""

    def on_mount(self) -> None:
        super().on_mount()
        if os.environ.get("NO_COLOR") is not None:
            self.theme = "clear"
        self.set_interval(1.0 / MAX_FPS, self._tick)

    def render(self) -> RenderResult:
        if not self.draws:  # nothing plotted yet: skip an empty plotext build (first paint)
            return Text(f"{self.title}\n…", justify="center")
        return super().render()

    def show(
        self,
        lines: Sequence[Line],
        axis: str = "step",
        smoothing: float = 0.0,
        window: float = 1.0,
        cursor: float | None = None,
    ) -> None:
        """What to draw: ``smoothing`` is the EMA weight (0 = raw values), ``window`` the
        share of the x-range shown (the last part), ``cursor`` an x to read values at."""
        self._lines, self._axis, self._smoothing = tuple(lines), axis, smoothing
        self._window, self.cursor = window, cursor

    @property
    def lines(self) -> tuple[Line, ...]:
        return self._lines

    def _view(self) -> object:
        lines = tuple((ln.summary.id, ln.metric, ln.label) for ln in self._lines)
        return (lines, self._axis, self._smoothing, self._window, self.cursor, self.log_y,
                self.size, self.app.theme, self.title)  # fmt: skip

    # -- inspecting -----------------------------------------------------------------------
    def action_cursor(self, cells: int) -> None:
        """Move the cursor by ``cells`` columns of the plot (it starts at the right end)."""
        if self.x_range is None:
            return
        lo, hi = self.x_range
        step = (hi - lo) / max(1, self.size.width - 12)
        x = hi if self.cursor is None else self.cursor + cells * step
        # Kept here at once: the next key (held down) steps on from it, not from the
        # value the screen has yet to hand back.
        self.cursor = min(hi, max(lo, x))
        self.post_message(self.CursorMoved(self.cursor))

    def action_cursor_to(self, end: int) -> None:
        if self.x_range is not None:
            self.post_message(self.CursorMoved(self.x_range[end]))

    def action_toggle_log_y(self) -> None:
        self.log_y = not self.log_y

    def action_leave(self) -> None:
        """Cursor off; the screen moves the focus back to its list."""
        self.post_message(self.CursorMoved(None))

    def _data(self) -> object:
        """Versions of the drawn series: a new point elsewhere redraws nothing; a series a
        run has not logged (yet) is drawn once it appears."""
        series = [ln.summary.series.get(ln.metric) for ln in self._lines]
        return tuple((id(s), -1 if s is None else s.version) for s in series)

    def _tick(self) -> None:
        if not self.screen.is_current or not self.display or self.size.area == 0:
            return
        view, data = self._view(), self._data()
        now = time.monotonic()
        if view != self._drawn_view or (
            data != self._drawn_data and now - self._drawn_at >= LIVE_INTERVAL
        ):
            self._drawn_view, self._drawn_data, self._drawn_at = view, data, now
            self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        width = max(8, self.size.width - 12) * 2  # braille: two dots per cell
        lo = self._lo()
        xmin, xmax = math.inf, -math.inf
        data, self.readout = [], []
        had_points = False  # before the log scale left out values <= 0
        for line in self._lines:
            smoothing = self._smoothing if line.metric in NOISY else 0.0
            with line.summary.lock:
                series = line.summary.series.get(line.metric)
                if series is None:
                    continue
                xs, ys = series.points(self._axis, smoothing, width, lo)
                raw = series.points(self._axis, 0.0, width, lo) if smoothing else None
                label = _label(line)
                if self.cursor is not None:
                    at = series.value_at(self._axis, self.cursor, smoothing)
                    self.readout.append((label or metric_title(line.metric), at))
            if self.log_y:
                had_points = had_points or bool(xs)
                xs, ys = _log10(xs, ys)
                raw = _log10(*raw) if raw is not None else None
            if xs:
                data.append((line, label, xs, ys, raw))
                xmin, xmax = min(xmin, xs[0]), max(xmax, xs[-1])
        self.x_range = (xmin, xmax) if data else None
        scale, unit = _time_unit(xmax) if self._axis == "time" and data else (1.0, "")
        self.points, self.plotted, self.xticks = 0, [], []
        mono = os.environ.get("NO_COLOR") is not None
        for i, (line, label, xs, ys, raw) in enumerate(data):
            if scale != 1.0:
                xs = [x / scale for x in xs]
            style = {"marker": _MARKERS[i % len(_MARKERS)]} if mono else {
                "marker": "braille", "color": _COLORS[i % len(_COLORS)]}  # fmt: skip
            if raw is not None and not mono:  # the raw values faintly behind their EMA
                plt.plot([x / scale for x in raw[0]], raw[1], marker="braille", color=RAW_COLOR)
                self.plotted.append((line.metric, "raw", raw[1]))
            plt.plot(xs, ys, **style, **({"label": label} if label else {}))
            self.plotted.append((line.metric, "line", ys))
            if line.metric in EVALUATIONS:
                plt.scatter(xs, ys, marker=POINT_MARKER, color=style.get("color", "default"))
                self.plotted.append((line.metric, "points", ys))
            self.points += len(xs)
        if data and self.cursor is not None:
            plt.vline(self.cursor / scale, "default" if mono else CURSOR_COLOR)
        if data and self.log_y:
            lo_y = min(min(d[3]) for d in data)
            hi_y = max(max(d[3]) for d in data)
            ticks = [lo_y + (hi_y - lo_y) * i / 4 for i in range(5)] if hi_y > lo_y else [lo_y]
            plt.yticks(ticks, [fmt.number(10**t, 3) for t in ticks])
        if data and self._axis in ("step", "epoch"):
            self.xticks = whole_ticks(xmin, xmax, max(2, self.size.width // TICK_CELLS))
            plt.xticks(self.xticks, [str(t) for t in self.xticks])
        plt.xlabel(f"{_AXIS_LABEL[self._axis]}{f' ({unit})' if unit else ''}")
        self.drawn_title = self._title(bool(data), had_points)
        plt.title(self.drawn_title)
        self.draws += 1
        self.refresh()

    def _lo(self) -> float:
        """The left end of the x-range: all, or the last ``window`` share of everything the
        drawn runs logged (so every chart of a screen shows the same stretch)."""
        if self._window >= 1.0:
            return -math.inf
        ends = [
            (xs[0], xs[-1])
            for summary in {id(ln.summary): ln.summary for ln in self._lines}.values()
            for series in list(summary.series.values())
            if len(xs := series.x(self._axis))
        ]
        if not ends:
            return -math.inf
        first, last = min(e[0] for e in ends), max(e[1] for e in ends)
        return last - self._window * (last - first)

    def _title(self, has_data: bool, log_hid: bool = False) -> str:
        """The title, with the cursor's readout and the scale when not the plain one;
        ``log_hid``: there were points, but the log scale cannot draw any (all <= 0)."""
        title = self.title + (" (log)" if self.log_y else "")
        if not has_data:
            return f"{title} — {'log scale: values <= 0' if log_hid else 'no data yet'}"
        if self.readout:
            title += " │ " + "  ".join(f"{k} {fmt.number(v)}" for k, v in self.readout)
        return title


def _log10(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The points a log scale can draw, as log10 (the y ticks name the real values;
    plotext's own log scale fails to draw legends on small canvases)."""
    keep = [i for i, y in enumerate(ys) if y > 0]
    return [xs[i] for i in keep], [math.log10(ys[i]) for i in keep]


def _label(line: Line) -> str:
    """The legend label; linear eval names the split its numbers are on."""
    split = line.summary.linear_split if line.metric == "linear" else ""
    return f"{line.label} ({split})" if split and line.label else line.label


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 3 * 3600:
        return 3600.0, "h"
    if seconds >= 180:
        return 60.0, "min"
    return 1.0, "s"
