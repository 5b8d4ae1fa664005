"""The log pane: a run's progress lines (epoch, val, probe, checkpoint, messages, as
``sslterm follow`` prints them) and the tail of its stdout.log, wrapped to the pane.

Lines are wrapped to the pane's width as it is *now*: the vertical scrollbar's room is
always kept (a scrollbar that appears after lines were wrapped would hide their last
cells), and a pane that changes width wraps its lines again."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from rich.errors import MarkupError
from rich.text import Text
from textual import work
from textual.widgets import RichLog

from sslterm.runs.follow import describe
from sslterm.runs.summary import RunSummary

FIRST_READ = 64 << 10
"""Bytes read from the end when a log is first shown (a long log is not loaded whole)."""


@dataclass
class _Tail:
    """Read position in one file; a new one per followed file, so a read still in
    flight for the previous run can never move the offset of the next."""

    path: Path
    offset: int = -1
    inode: int | None = None
    busy: bool = False

    def read_new(self) -> str:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self.inode not in (None, st.st_ino) or st.st_size < self.offset:
                    self.offset = 0  # replaced or truncated: from the start
                self.inode = st.st_ino
                if self.offset < 0:
                    self.offset = max(0, st.st_size - FIRST_READ)
                fh.seek(self.offset)
                data = fh.read(4 << 20)
        except FileNotFoundError:
            return ""
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode("utf-8", errors="replace")


def note_text(event: dict) -> Text | None:
    """An event as the headless follower prints it (its own formatting, reused); log
    messages are shown as written, never read as markup."""
    try:
        message = describe(event)
    except (KeyError, TypeError, ValueError):  # a field missing or of the wrong type
        return None
    if not message:
        return None
    if event.get("kind") == "log":
        return Text(message)
    try:
        return Text.from_markup(message)
    except MarkupError:
        return Text(message)


def stdout_lines(text: str) -> list[str]:
    """Complete lines of new stdout text; a progress bar redrawn with \\r shows its last state."""
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text[:-1].split("\n")]


class LogTail(RichLog):
    """Call :meth:`follow` with a run's summary, then :meth:`poll` on a timer."""

    DEFAULT_CSS = """
    LogTail { border: round $panel; scrollbar-gutter: stable; overflow-x: hidden; }
    """
    MAX_LINES = 5000

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=self.MAX_LINES, min_width=10, wrap=True, auto_scroll=True,
                         id=id)  # fmt: skip
        self._texts: deque[Text] = deque(maxlen=self.MAX_LINES)
        """What was written, unwrapped: wrapped again when the pane's width changes."""
        self._wrapped_at = 0
        """The width the lines shown were wrapped to (0: none yet)."""
        self._tail: _Tail | None = None
        self._summary: RunSummary | None = None
        self._shown: tuple[int, int] = (0, 0)
        """(generation, notes) of the summary already written."""

    def add(self, text: Text) -> None:
        """Write one log line (wrapped to the pane)."""
        self._texts.append(text)
        if self._size_known:
            self._wrapped_at = self.scrollable_content_region.width
        self.write(text)

    def clear(self) -> LogTail:
        self._texts.clear()
        return super().clear()

    def on_resize(self) -> None:
        """A new width wraps every line again (RichLog keeps them as wrapped when written)."""
        width = self.scrollable_content_region.width
        if not self._size_known or not width or width == self._wrapped_at:
            return
        self._wrapped_at = width
        texts = list(self._texts)
        super().clear()
        for text in texts:
            self.write(text, scroll_end=False)
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    @property
    def path(self) -> Path | None:
        return self._tail.path if self._tail else None

    def follow(self, summary: RunSummary | None) -> None:
        if summary is self._summary:
            return
        self._summary = summary
        self._tail = _Tail(summary.run.stdout) if summary else None
        self._shown = (summary.generation, 0) if summary else (0, 0)
        self.clear()
        self.border_title = f"log: {summary.id}" if summary else "log"
        self.poll()

    def poll(self) -> None:
        if not self.screen.is_current:
            return
        self.show_notes()
        tail = self._tail
        if tail is None or tail.busy:
            return
        tail.busy = True
        self._read(tail)

    def show_notes(self) -> None:
        """Write the run's progress lines not written yet (cheap: call on every poll)."""
        s = self._summary
        if s is None or not self.screen.is_current:
            return
        with s.lock:
            generation, done = self._shown
            if generation != s.generation:  # the log was replaced: both from the start
                self.clear()
                self._tail = _Tail(s.run.stdout)
                done = 0
            new = list(s.notes)[len(s.notes) - min(len(s.notes), s.noted - done) :]
            self._shown = (s.generation, s.noted)
        for event in new:
            text = note_text(event)
            if text is not None:
                self.add(text)

    @work(thread=True, group="log-tail")
    def _read(self, tail: _Tail) -> None:
        try:
            text = tail.read_new()
        finally:
            tail.busy = False
        if text:
            self.app.call_from_thread(self._append, tail, text)

    def _append(self, tail: _Tail, text: str) -> None:
        if tail is self._tail:
            for line in stdout_lines(text):
                self.add(Text(line, style="dim"))
