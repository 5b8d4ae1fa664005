"""An embedding projection as a figure: one point per sampled feature, coloured by class,
the legend outside the data, sized for one column of a two-column paper."""

from __future__ import annotations

from pathlib import Path

from sslterm.errors import UserError
from sslterm.eval.embed import Embedding
from sslterm.report.plot import FONT_PT, FORMATS, SIZES, _figure_class, write_figure

LEGEND_MAX = 20
"""Classes named in the legend; more are only colours."""
POINTS_GID = "points"
"""The scatter's id in an SVG (its points are the ``<use>`` elements in it)."""


def save_embedding_figure(embedding: Embedding, path: str | Path, title: str = "",
                          size: str = "column") -> Path:
    """The scatter as SVG, PNG or PDF by the suffix, written atomically."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: unknown figure format {out.suffix or '(none)'!r}; "
                        "use .svg, .png or .pdf")
    Figure = _figure_class()
    import matplotlib
    import numpy as np
    from matplotlib.lines import Line2D

    xy = np.asarray(embedding.points, dtype=float)
    labels = np.asarray(embedding.labels)
    classes = sorted(set(embedding.labels))
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42,
                                "font.size": FONT_PT, "axes.titlesize": FONT_PT + 1}):
        fig = Figure(figsize=SIZES[size], layout="constrained")
        ax = fig.add_subplot()
        ax.scatter(xy[:, 0], xy[:, 1], s=4, c=[colour[c] for c in labels], linewidths=0,
                   alpha=0.8, gid=POINTS_GID)
        name = embedding.method.upper()
        ax.set_xlabel(f"{name} 1")
        ax.set_ylabel(f"{name} 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title or f"{name} of {len(labels)} {embedding.split} features")
        if len(classes) <= LEGEND_MAX:
            handles = [Line2D([], [], marker="o", linestyle="", markersize=4,
                              color=colour[c], label=f"class {c}") for c in classes]
            fig.legend(handles=handles, loc="outside right upper", frameon=False,
                       fontsize=FONT_PT - 1)
        write_figure(fig, out)
    return out
