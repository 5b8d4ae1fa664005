"""The run queue: what waits, whether the runner works, what it started."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from sslterm.runs import queue
from sslterm.tui.widgets.modebar import ModeBar


class QueueScreen(Screen):
    """Queue from the composer (ctrl+g); the runner keeps going after the app closes."""

    BINDINGS = [
        Binding("x,delete", "remove", "Remove"),
        Binding("shift+up,K", "move(-1)", "Sooner"),
        Binding("shift+down,J", "move(1)", "Later"),
        Binding("g", "start_runner", "Start runner"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[queue.QueueItem] = []
        self._busy = False
        self._follow: str | None = None  # item id the cursor follows after a move

    def compose(self) -> ComposeResult:
        yield ModeBar("queue")
        yield Static(id="runner-status")
        yield DataTable(id="pending", cursor_type="row", zebra_stripes=True)
        yield Static("Taken from the queue (newest last)", classes="subtitle")
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#pending", DataTable).add_columns("#", "profile", "from", "queued")
        self.query_one("#history", DataTable).add_columns("profile", "at", "run", "error")
        self.set_interval(1.0, self.reload)
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        if self._busy or not self.is_current:
            return
        self._busy = True
        self._read()

    @work(thread=True, group="queue")
    def _read(self) -> None:
        out = self.app.output_dir
        try:
            data = (queue.pending(out), queue.history(out, 20), queue.runner_alive(out))
        finally:
            self._busy = False
        self.app.call_from_thread(self._show, *data)

    def _show(self, items: list[queue.QueueItem], taken: list[dict[str, Any]], alive: bool) -> None:
        self.items = items
        status = self.query_one("#runner-status", Static)
        if alive:
            status.update(f"runner: working ({len(items)} waiting)")
        elif items:
            status.update(f"runner: not running — {len(items)} waiting; press g to start it")
        else:
            status.update("queue empty — queue profiles from the composer (2, then ctrl+g)")
        pending = self.query_one("#pending", DataTable)
        keep = pending.cursor_row
        pending.clear()
        for n, item in enumerate(items, 1):
            pending.add_row(str(n), item.stem, item.source, item.queued, key=item.id)
        ids = [item.id for item in items]
        if self._follow in ids:
            keep, self._follow = ids.index(self._follow), None
        if items:
            pending.move_cursor(row=min(keep, len(items) - 1), animate=False)
        history = self.query_one("#history", DataTable)
        history.clear()
        for h in taken:
            history.add_row(
                h.get("stem", ""), h.get("at", ""), h.get("run") or "—", h.get("error") or ""
            )

    def _selected(self) -> queue.QueueItem | None:
        pending = self.query_one("#pending", DataTable)
        if not self.items or pending.cursor_row >= len(self.items):
            self.notify("nothing selected", severity="warning")
            return None
        return self.items[pending.cursor_row]

    def action_move(self, by: int) -> None:
        item = self._selected()
        if item is None:
            return
        moved = queue.move(item, by)
        if moved is None:
            self.notify(f"{item.stem} was already taken by the runner", severity="warning")
        else:
            self._follow = moved.id
        self.reload()

    def action_remove(self) -> None:
        item = self._selected()
        if item is None:
            return
        if queue.remove(item):
            self.notify(f"removed {item.stem} from the queue")
        else:
            self.notify(f"{item.stem} was already taken by the runner", severity="warning")
        self.reload()

    def action_start_runner(self) -> None:
        started = queue.ensure_runner(self.app.output_dir)
        self.notify("runner started" if started else "the runner is already working")
        self.reload()
