"""A search's parallel-coordinates figure (Optuna's own, drawn with matplotlib): one line
per completed trial across the searched keys to the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslterm.errors import UserError
from sslterm.report.plot import FORMATS, _figure_class, write_figure


def save_parallel_coordinates(study: Any, path: str | Path, metric: str, title: str = "") -> Path:
    """Written atomically, as SVG, PNG or PDF by the suffix; needs two completed trials."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: unknown figure format {out.suffix or '(none)'!r}; "
                        "use .svg, .png or .pdf")
    _figure_class()  # matplotlib is there, or one line saying how to install it
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        raise UserError(f"{out}: a parallel-coordinates figure needs two completed trials "
                        f"(this search has {len(done)})")
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42, "font.size": 8}):
        ax = plot_parallel_coordinate(study, target_name=metric)
        fig = ax.figure
        fig.set_size_inches(7.0, 3.0)
        ax.set_title(title or f"{study.study_name}: {len(done)} completed trials")
        try:
            write_figure(fig, out, bbox_inches="tight")
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return out
