"""Publication-style figures of one metric over several runs (matplotlib, imported only
here, so ``sslterm --help``, ``runs`` and the app start without it)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslterm.errors import UserError
from sslterm.files import write_output
from sslterm.runs.store import RunDir
from sslterm.runs.summary import X_AXES, RunSummary, metric_title

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_INSTALL = 'pip install matplotlib (in a clone: pip install -e ".[plot]")'
FORMATS = (".svg", ".png", ".pdf")
SIZES = {"column": (3.5, 2.6), "page": (7.0, 3.0)}
"""Inches: one column and the full text width of a two-column paper (about 3.3 and 7 in),
so a figure goes in at 100 % and its 8 pt text matches the caption's."""
FONT_PT = 8
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


def axis_label(metric: str, splits: set[str]) -> str:
    """A metric's axis name with the split it was measured on, as a paper names it:
    ``linear test top-1 %`` (the split the runs share), ``kNN val top-1 %``."""
    if metric == "linear":
        return f"linear {splits.pop()} top-1 %" if len(splits) == 1 else "linear top-1 %"
    if metric == "knn":
        return "kNN val top-1 %"
    return metric_title(metric)


def _band(curves: Sequence[tuple[list[float], list[float]]]) -> tuple[Any, Any, Any]:
    """x, mean and sample std of curves on the x values of the longest one, where all of
    them have points (np.interp in between)."""
    import numpy as np

    lo = max(min(xs) for xs, _ in curves)
    hi = min(max(xs) for xs, _ in curves)
    grid = np.asarray(max((xs for xs, _ in curves), key=len), dtype=float)
    grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.stack([np.interp(grid, xs, vs) for xs, vs in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0, ddof=1)


def write_figure(fig: Figure, out: Path, **savefig: Any) -> None:
    """Save ``fig`` to ``out`` (format by suffix) whole or not at all."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format=out.suffix.lower()[1:], **savefig)
    write_output(out, buf.getvalue())


def save_figure(
    run_dirs: Sequence[str | Path | RunDir],
    metric: str,
    x: str,
    path: str | Path,
    *,
    smoothing: float = 0.0,
    labels: Mapping[str, str] | None = None,
    title: str = "",
    size: str = "column",
    groups: bool = True,
) -> Path:
    """Draw ``metric`` of every run against ``x`` (step, epoch or time), overlaid and
    labelled by the runs' labels (``labels``: run id -> name, overriding them; else the
    id), and save it as SVG, PNG or PDF by the file's suffix. Runs of one seed group
    (``groups``) are one line, their mean, in a band of ± one sample std. The legend is
    outside the data, the axes name the split, ``size`` is ``column`` or ``page`` of a
    two-column paper. SVG keeps its text as text, so a paper's fonts and search apply.
    ``smoothing``: the app's EMA weight (0 = raw values). Written atomically."""
    from sslterm.runs.groups import group_name, seed_groups

    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: unknown figure format {out.suffix or '(none)'!r}; "
                        "use .svg, .png or .pdf")
    if x not in X_AXES:
        raise UserError(f"--x {x}: use one of {', '.join(X_AXES)}")
    if size not in SIZES:
        raise UserError(f"--size {size}: use one of {', '.join(SIZES)}")
    summaries = _summaries(run_dirs)
    drawn = [s for s in summaries if len(s.series.get(metric, ()))]
    if not drawn:
        have = ", ".join(available_metrics(summaries)) or "none yet"
        raise UserError(f"--metric {metric}: no such series in these runs (they have: {have})")
    labels = labels or {}
    names = {s.id: labels.get(s.id) or s.name for s in drawn}
    parts = seed_groups(drawn, lambda s: s.run) if groups else [[s] for s in drawn]
    curves = {s.id: s.series[metric].points(x, smoothing) for s in drawn}
    xlabel, div = {"step": ("optimizer step", 1.0), "epoch": ("epoch", 1.0)}.get(x, ("", 1.0))
    if x == "time":
        div, unit = time_unit(max((max(xs, default=0.0) for xs, _ in curves.values()),
                                  default=0.0))
        xlabel = f"wall time ({unit})"
    Figure = _figure_class()
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42,
                                "font.size": FONT_PT, "axes.titlesize": FONT_PT + 1}):
        fig = Figure(figsize=SIZES[size], layout="constrained")
        ax = fig.add_subplot()
        for i, members in enumerate(parts):
            name = group_name([names[s.id] for s in members],
                              [labels.get(s.id) or s.label for s in members],
                              [s.profile for s in members])
            if len(members) == 1 or any(len(curves[s.id][0]) < 2 for s in members):
                for s in members:
                    xs, ys = curves[s.id]
                    ax.plot([v / div for v in xs], ys, label=names[s.id], linewidth=1.2)
                continue
            grid, mean, std = _band([curves[s.id] for s in members])
            (line,) = ax.plot(grid / div, mean, label=f"{name} (n={len(members)})",
                              linewidth=1.2)
            ax.fill_between(grid / div, mean - std, mean + std, color=line.get_color(),
                            alpha=0.25, linewidth=0, gid=f"band-{i}")
        ax.set_xlabel(xlabel)
        splits = {s.linear_split for s in drawn if s.linear_split}
        ylabel = axis_label(metric, splits)
        ax.set_ylabel(f"{ylabel} (EMA {smoothing:g})" if smoothing else ylabel)
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        handles = ax.get_legend_handles_labels()[0]
        fig.legend(loc="outside lower center", ncols=min(3, len(handles)), frameon=False)
        write_figure(fig, out)
    return out
