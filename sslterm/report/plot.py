"""Publication-style figures of one metric over several runs (matplotlib, imported only
here, so ``sslterm --help``, ``runs`` and the app start without it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sslterm.errors import UserError
from sslterm.runs.store import RunDir
from sslterm.runs.summary import X_AXES, RunSummary, metric_title

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_INSTALL = 'pip install matplotlib (in a clone: pip install -e ".[plot]")'
FORMATS = (".svg", ".png", ".pdf")
SIZE = (5.5, 3.6)
"""Inches: one column of a two-column paper at full width, readable when scaled down."""
DPI = 200
TIME_UNITS = ((3 * 3600, 3600.0, "hours"), (180, 60.0, "minutes"), (0, 1.0, "seconds"))


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(f"plotting needs matplotlib, which is not installed: {PLOT_INSTALL}") from None
    return Figure


def time_unit(seconds: float) -> tuple[float, str]:
    """Divisor and name of the unit that keeps a wall-time axis readable."""
    return next((div, name) for limit, div, name in TIME_UNITS if seconds >= limit)


def _summaries(run_dirs: Sequence[str | Path | RunDir]) -> list[RunSummary]:
    out = []
    for ref in run_dirs:
        summary = RunSummary(ref if isinstance(ref, RunDir) else RunDir(Path(ref)))
        summary.update()
        out.append(summary)
    return out


def available_metrics(summaries: Sequence[RunSummary]) -> list[str]:
    return sorted({name for s in summaries for name, series in s.series.items() if len(series)})


def save_figure(
    run_dirs: Sequence[str | Path | RunDir],
    metric: str,
    x: str,
    path: str | Path,
    *,
    smoothing: float = 0.0,
) -> Path:
    """Draw ``metric`` of every run against ``x`` (step, epoch or time), overlaid and
    labelled by run id, and save it as SVG, PNG or PDF by the file's suffix. SVG keeps
    its text as text, so a paper's fonts and search apply. ``smoothing``: the app's EMA
    weight (0 = raw values)."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: unknown figure format {out.suffix or '(none)'!r}; "
                        "use .svg, .png or .pdf")
    if x not in X_AXES:
        raise UserError(f"--x {x}: use one of {', '.join(X_AXES)}")
    summaries = _summaries(run_dirs)
    drawn = [s for s in summaries if len(s.series.get(metric, ()))]
    if not drawn:
        have = ", ".join(available_metrics(summaries)) or "none yet"
        raise UserError(f"--metric {metric}: no such series in these runs (they have: {have})")
    curves = [(s.id, *s.series[metric].points(x, smoothing)) for s in drawn]
    xlabel, div = {"step": ("optimizer step", 1.0), "epoch": ("epoch", 1.0)}.get(x, ("", 1.0))
    if x == "time":
        div, unit = time_unit(max((max(xs, default=0.0) for _, xs, _ in curves), default=0.0))
        xlabel = f"wall time ({unit})"
    Figure = _figure_class()
    import matplotlib

    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot()
    for label, xs, ys in curves:
        ax.plot([v / div for v in xs], ys, label=label, linewidth=1.3)
    ax.set_xlabel(xlabel)
    ylabel = metric_title(metric)
    ax.set_ylabel(f"{ylabel} (EMA {smoothing:g})" if smoothing else ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        fig.savefig(out, dpi=DPI)
    return out
