"""Save the chart on screen as a figure for a paper (``f``), through the same
:func:`sslterm.report.plot.save_figure` as ``sslterm plot``; matplotlib is imported
only then, in a worker thread, so the app starts without it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textual.screen import Screen

from sslterm.errors import UserError
from sslterm.runs.store import RunDir

FIGURES_DIR = Path("figures")
"""Where figures go, from the app's working directory."""


def figure_path(metric: str, run_ids: Sequence[str], folder: Path = FIGURES_DIR) -> Path:
    """``figures/<metric>-<run>.svg``; several runs: ``<metric>-<first run>+<others>.svg``."""
    more = f"+{len(run_ids) - 1}" if len(run_ids) > 1 else ""
    return folder / f"{metric}-{run_ids[0]}{more}.svg"


def save_chart(
    screen: Screen, runs: Sequence[RunDir], metric: str, axis: str, smoothing: float
) -> None:
    """Save in a worker of ``screen``; the outcome is a notification."""
    if not runs:
        screen.notify("no run to plot", severity="warning")
        return
    path = figure_path(metric, [r.id for r in runs])

    def work() -> None:
        from sslterm.report.plot import save_figure

        try:
            out = save_figure(runs, metric, axis, path, smoothing=smoothing)
        except UserError as exc:
            screen.app.call_from_thread(screen.notify, str(exc), severity="error", timeout=8)
            return
        screen.app.call_from_thread(screen.notify, f"saved {out}")

    screen.run_worker(work, thread=True, group="figure", exit_on_error=False)
