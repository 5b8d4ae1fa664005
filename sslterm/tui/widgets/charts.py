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
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from sslterm.runs.summary import NOISY, RunSummary

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
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self._lines: tuple[Line, ...] = ()
        self._axis = "step"
        self._smoothing = 0.0
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

    def on_mount(self) -> None:
        super().on_mount()
        if os.environ.get("NO_COLOR") is not None:
            self.theme = "clear"
        self.set_interval(1.0 / MAX_FPS, self._tick)

    def render(self) -> RenderResult:
        if not self.draws:  # nothing plotted yet: skip an empty plotext build (first paint)
            return Text(f"{self.title}\n…", justify="center")
        return super().render()

    def show(self, lines: Sequence[Line], axis: str = "step", smoothing: float = 0.0) -> None:
        """What to draw: ``smoothing`` is the EMA weight (0 = raw values)."""
        self._lines, self._axis, self._smoothing = tuple(lines), axis, smoothing

    def _view(self) -> object:
        lines = tuple((ln.summary.id, ln.metric, ln.label) for ln in self._lines)
        return lines, self._axis, self._smoothing, self.size, self.app.theme, self.title

    def _data(self) -> object:
        """Versions of the drawn series: a new point elsewhere redraws nothing."""
        return tuple((id(s := ln.summary.series[ln.metric]), s.version) for ln in self._lines)

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
        plt.title(self.title)
        width = max(8, self.size.width - 12) * 2  # braille: two dots per cell
        xmin, xmax = math.inf, 0.0
        data = []
        for line in self._lines:
            smoothing = self._smoothing if line.metric in NOISY else 0.0
            with line.summary.lock:
                series = line.summary.series[line.metric]
                xs, ys = series.points(self._axis, smoothing, width)
                raw = series.points(self._axis, 0.0, width) if smoothing else None
                label = _label(line)
            if xs:
                data.append((line, label, xs, ys, raw))
                xmin, xmax = min(xmin, xs[0]), max(xmax, xs[-1])
        scale, unit = _time_unit(xmax) if self._axis == "time" else (1.0, "")
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
        if data and self._axis in ("step", "epoch"):
            self.xticks = whole_ticks(xmin, xmax, max(2, self.size.width // TICK_CELLS))
            plt.xticks(self.xticks, [str(t) for t in self.xticks])
        plt.xlabel(f"{_AXIS_LABEL[self._axis]}{f' ({unit})' if unit else ''}")
        if not data:
            plt.title(f"{self.title} — no data yet")
        self.draws += 1
        self.refresh()


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
