"""A log pane that tails a run's stdout.log from a byte offset."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.widgets import Log

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


class LogTail(Log):
    """Call :meth:`follow` with a path, then :meth:`poll` on a timer."""

    DEFAULT_CSS = "LogTail { border: round $panel; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=5000, auto_scroll=True, id=id)
        self._tail: _Tail | None = None

    @property
    def path(self) -> Path | None:
        return self._tail.path if self._tail else None

    def follow(self, path: Path | None) -> None:
        if path == self.path:
            return
        self._tail = _Tail(path) if path else None
        self.clear()
        self.border_title = f"log: {path.parent.name}/{path.name}" if path else "log"
        self.poll()

    def poll(self) -> None:
        tail = self._tail
        if tail is None or tail.busy or not self.screen.is_current:
            return
        tail.busy = True
        self._read(tail)

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
            # progress bars redraw with \r: show the last state of each line
            lines = text[:-1].split("\n")
            self.write_lines(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)
