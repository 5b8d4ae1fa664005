"""Save the chart on screen as a figure for a paper (``f``), through the same
:func:`sslterm.report.plot.save_figure` as ``sslterm plot``; matplotlib is imported
only then, in a worker thread, so the app starts without it.

Figures go to ``./figures`` from where the app started, or to the folder the
environment variable :data:`FIGURES_ENV` names (the app's ``figures_dir`` option too);
the notification names the file with its full path."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from textual.screen import Screen

from sslterm.errors import UserError
from sslterm.runs.store import RunDir
from sslterm.tui.notes import notify_plain

FIGURES_DIR = Path("figures")
"""Where figures go by default, from the app's working directory."""
FIGURES_ENV = "SSLTERM_FIGURES"
"""Environment variable naming the folder for figures instead."""


def figures_folder(folder: str | os.PathLike[str] | None = None) -> Path:
    """The folder for figures, absolute: ``folder``, else ``$SSLTERM_FIGURES``, else
    ``./figures`` (relative ones from the current directory; ``~`` is expanded)."""
    chosen = folder or os.environ.get(FIGURES_ENV) or FIGURES_DIR
    return Path(os.path.abspath(Path(chosen).expanduser()))


def figure_path(metric: str, run_ids: Sequence[str], folder: Path = FIGURES_DIR) -> Path:
    """``figures/<metric>-<run>.svg``; several runs: ``<metric>-<first run>+<others>.svg``."""
    more = f"+{len(run_ids) - 1}" if len(run_ids) > 1 else ""
    return folder / f"{metric}-{run_ids[0]}{more}.svg"


def save_chart(
    screen: Screen,
    runs: Sequence[RunDir],
    metric: str,
    axis: str,
    smoothing: float,
    folder: Path | None = None,
) -> None:
    """Save in a worker of ``screen`` into ``folder`` (None: :func:`figures_folder`); the
    outcome is a notification naming the file's full path."""
    if not runs:
        screen.notify("no run to plot", severity="warning")
        return
    path = figure_path(metric, [r.id for r in runs], folder or figures_folder())

    def work() -> None:
        from sslterm.report.plot import save_figure

        try:
            out = save_figure(runs, metric, axis, path, smoothing=smoothing)
        except UserError as exc:
            screen.app.call_from_thread(notify_plain, screen, str(exc), severity="error", timeout=8)
            return
        except OSError as exc:
            screen.app.call_from_thread(notify_plain, screen,
                                        f"cannot write {path}: {exc.strerror or exc}",
                                        severity="error", timeout=8)  # fmt: skip
            return
        screen.app.call_from_thread(notify_plain, screen, f"saved {os.path.abspath(out)}")

    screen.run_worker(work, thread=True, group="figure", exit_on_error=False)
