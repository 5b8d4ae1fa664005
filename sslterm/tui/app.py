"""The sslterm terminal app: watch, compose, launch, control and compare runs.

The app only reads run directories (and asks the launcher to start, stop,
resume, kill or delete), so runs outlive it and the SSH session; reopening
it finds every run as it is. It never imports torch: launches that need the
torch-side checks go through a child process (``sslterm.runs.queue.start_checked``).

One timer polls the output folder once a second in a worker thread
(``RunIndex.refresh`` reads only new bytes) and tells the visible screen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from sslterm.runs.summary import SMOOTHING_STEPS, X_AXES, RunIndex
from sslterm.tui.screens.runs import RunsScreen

if TYPE_CHECKING:
    from sslterm.tui.screens.composer import ComposerScreen
    from sslterm.tui.system import SystemMonitor

ENV_CHECK_DELAY = 0.6
"""Seconds the composer waits after the last keystroke before checking data paths."""


def _lazy(module: str, name: str) -> Callable[[], Screen]:
    """A view built on first use: its imports (pydantic schema, tomlkit, psutil) do not
    delay the first paint."""

    def make() -> Screen:
        return getattr(importlib.import_module(f"sslterm.tui.screens.{module}"), name)()

    return make


class SSLTermApp(App):
    """Modes are the five views; digits switch between them from anywhere but a text field."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "sslterm"
    MODES = {
        "runs": RunsScreen,
        "composer": _lazy("composer", "ComposerScreen"),
        "compare": _lazy("compare", "CompareScreen"),
        "queue": _lazy("queue", "QueueScreen"),
        "system": _lazy("system", "SystemScreen"),
        "sweep": _lazy("sweep", "SweepScreen"),
    }
    DEFAULT_MODE = "runs"
    POLL_BUDGET = 0.25
    """Seconds of log reading per poll, so a folder of long runs fills in step by step."""
    BINDINGS = [
        Binding("1", "switch_mode('runs')", "Runs", show=False),
        Binding("2", "switch_mode('composer')", "Compose", show=False),
        Binding("3", "switch_mode('compare')", "Compare", show=False),
        Binding("4", "switch_mode('queue')", "Queue", show=False),
        Binding("5", "switch_mode('system')", "System", show=False),
        Binding("6", "switch_mode('sweep')", "Sweeps", show=False),
        Binding("question_mark", "toggle_keys", "Keys", key_display="?"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        output_dir: str | Path = "./runs",
        profiles_dir: str | Path = "profiles",
        *,
        poll_interval: float = 1.0,
        system_monitor: SystemMonitor | None = None,
        env_check_delay: float | None = ENV_CHECK_DELAY,
        figures_dir: str | Path | None = None,
    ) -> None:
        """``env_check_delay``: see :data:`ENV_CHECK_DELAY`; None turns the composer's data
        path and encoder checks off (a launch still makes them). ``figures_dir``: where
        ``f`` saves figures (None: ``$SSLTERM_FIGURES``, else ``./figures``)."""
        from sslterm.tui.figures import figures_folder

        super().__init__()
        self.index = RunIndex(output_dir)
        self.output_dir = Path(output_dir)
        self.profiles_dir = Path(profiles_dir)
        self.poll_interval = poll_interval
        self.marked: set[str] = set()
        self.axis = "step"
        self.smoothing = 0.0
        """EMA weight of the charts (0 = raw values); ``e`` cycles it."""
        self.polls = 0
        self._monitor = system_monitor
        self.want_selected: str | None = None
        """A run id the runs view should highlight once it appears (after a launch)."""
        self._polling = False
        self.env_check_delay = env_check_delay
        self.composer: ComposerScreen | None = None
        """The composer, once it was opened (it keeps its document across views)."""
        self.figures_dir = figures_folder(figures_dir)
        """Where ``f`` saves figures (absolute)."""
        self.runs_columns: tuple[str, ...] | None = None
        """The runs table's columns the user chose (``o``; None: all), for the session."""

    def on_mount(self) -> None:
        self.set_interval(self.poll_interval, self.poll)
        self.poll()

    # -- polling ----------------------------------------------------------------------
    def poll(self) -> None:
        """Refresh the run index in a thread, unless the previous refresh still runs."""
        if self._polling:
            return
        self._polling = True
        self._poll_worker()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll_worker(self) -> None:
        try:
            self.index.refresh(budget=self.POLL_BUDGET)
        finally:
            self.call_from_thread(self._polled)

    def _polled(self) -> None:
        self._polling = False
        self.polls += 1
        if self.index.incomplete:
            self.call_later(self.poll)  # more logs to read: go on at once, newest first
        for screen in self.screen_stack:
            if hasattr(screen, "runs_updated") and screen.is_mounted:
                screen.runs_updated()

    @property
    def system_monitor(self) -> SystemMonitor:
        if self._monitor is None:
            from sslterm.tui.system import SystemMonitor

            self._monitor = SystemMonitor()
        return self._monitor

    # -- shared view state ------------------------------------------------------------
    def cycle_smoothing(self) -> None:
        steps = SMOOTHING_STEPS
        at = steps.index(self.smoothing) if self.smoothing in steps else -1
        self.smoothing = steps[(at + 1) % len(steps)]

    @property
    def ema_label(self) -> str:
        return f"EMA {self.smoothing:g}" if self.smoothing else "EMA off"

    def cycle_axis(self) -> None:
        self.axis = X_AXES[(X_AXES.index(self.axis) + 1) % len(X_AXES)]

    async def action_quit(self) -> None:
        """Quit, after asking when the composer holds unsaved changes."""
        composer = self.composer
        if composer is None or not composer.dirty:
            await super().action_quit()
            return
        from sslterm.tui.screens.dialogs import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                self.exit()

        if not isinstance(self.screen, ConfirmScreen):
            self.push_screen(
                ConfirmScreen(f"Quit? The profile {composer.display_path} has unsaved changes."),
                answer,
            )

    # -- keys: a dialog over the view, which keeps its layout (a side panel squeezed it) ----
    def action_toggle_keys(self) -> None:
        from sslterm.tui.screens.dialogs import KeysScreen

        if isinstance(self.screen, KeysScreen):
            self.screen.dismiss(None)
        else:
            self.action_show_help_panel()

    def action_show_help_panel(self) -> None:
        """Every key of the current view (also the command palette's "Keys")."""
        from sslterm.tui.screens.dialogs import KeysScreen

        screen = self.screen
        if not isinstance(screen, KeysScreen):
            self.push_screen(KeysScreen(screen_keys(self, screen), self.help_notes(screen)))

    def action_hide_help_panel(self) -> None:
        from sslterm.tui.screens.dialogs import KeysScreen

        if isinstance(self.screen, KeysScreen):
            self.screen.dismiss(None)

    def help_notes(self, screen: Screen) -> list[str]:
        """Lines under the keys: what a key does that its name cannot say."""
        from sslterm.tui.figures import FIGURES_ENV

        notes = []
        if hasattr(screen, "action_pick_columns"):
            notes.append("o: the table's columns, for this session · enter: a run's full id")
        if hasattr(screen, "action_filter"):
            notes.append("/ filter: tag=x train.base_lr=0.1 linear>50 · g: group · t: label, tags")
        if hasattr(screen, "action_save_figure"):
            notes.append(f"f saves figures in {self.figures_dir} ({FIGURES_ENV}=DIR: elsewhere)")
        return notes

    # -- command palette: every key of the current screen is a command ---------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen = {"Quit", "Keys"}
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description or binding.system or binding.description in seen:
                continue
            seen.add(binding.description)
            yield SystemCommand(
                binding.description,
                f"key: {binding.key_display or self.get_key_display(binding)}"
                if key
                else binding.description,
                partial(self.run_action, binding.action, active.node),
            )


def screen_keys(app: App, screen: Screen) -> list[tuple[str, str]]:
    """(key, what it does) of every key active on ``screen``: the view's own first, then
    those of the focused widget, Textual's (focus moves, ...), the app's."""
    own = {b.action for b in type(screen).BINDINGS if isinstance(b, Binding)}
    rank: list[tuple[int, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for active in screen.active_bindings.values():
        binding = active.binding
        if not binding.description:
            continue
        shown = (binding.key_display or app.get_key_display(binding), binding.description)
        if shown in seen:
            continue
        seen.add(shown)
        if active.node is screen:
            order = 0 if binding.action in own else 2
        else:
            order = 3 if active.node is app else 1
        rank.append((order, *shown))
    return [(key, what) for _, key, what in sorted(rank, key=lambda r: r[0])]


def run_app(
    output_dir: str = "./runs", profiles_dir: str = "profiles", figures_dir: str | None = None
) -> int:
    """Entry point for ``sslterm`` without arguments."""
    SSLTermApp(output_dir, profiles_dir, figures_dir=figures_dir).run()
    return 0
