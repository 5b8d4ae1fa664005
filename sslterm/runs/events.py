"""The event log: one JSON object per line in ``events.jsonl``, append-only.

The trainer (global rank 0 only) appends; every watcher reads incrementally
from a byte offset, so following a long run costs only the new bytes. The file is
never rewritten, not even by a resume: a resumed trainer appends ``run_resumed``
with the position it continues from, and progress events before it past that
position are superseded (:func:`current` applies this). A torn
last line (the writer was killed mid-write) is never parsed: readers stop at
the last newline, and the writer repairs the tail before appending again.
The schema is documented in docs/events.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: append-only across resumes (run_resumed)
EVENTS_FILE = "events.jsonl"

KINDS = (
    "run_started",
    "step",
    "epoch",
    "val",
    "probe",
    "checkpoint",
    "log",
    "run_finished",
    "run_failed",
    "run_stopped",
    "run_resumed",
)
# progress a resume redoes: these kinds, past the resumed position, are superseded
PROGRESS = frozenset({"step", "epoch", "val", "probe", "checkpoint"})


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every reader can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def complete_length(path: Path) -> int:
    """Bytes of the log up to its last newline: the complete lines (a torn last line is
    cut by the next writer, so a reader that wants only new events starts here)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        block = 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            idx = fh.read(pos - start).rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
    return 0


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no trailing newline) off the log; returns bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    keep = complete_length(path)
    if keep == size:
        return 0
    with open(path, "rb+") as fh:
        fh.truncate(keep)
    return size - keep


class EventWriter:
    """Appends events; each line is written with one ``write`` call and flushed."""

    def __init__(self, run_dir: Path | str) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        repair_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = {"v": SCHEMA_VERSION, "kind": kind, "t": round(time.time(), 3), **json_safe(fields)}
        self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._fh.flush()
        return event

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


@dataclass
class EventReader:
    """Reads new complete lines from a byte offset; call :meth:`read_new` on every tick."""

    path: Path
    offset: int = 0
    skipped: int = 0
    restarts: int = 0
    _inode: int | None = field(default=None, repr=False)

    def has_new(self) -> bool:
        """Whether the file changed since the last read (one ``stat``, no open)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return st.st_size != self.offset or st.st_ino != self._inode

    def skip_to(self, offset: int, inode: int) -> None:
        """Go on from ``offset`` of the file ``inode`` (a caller read up to it another way)."""
        self.offset, self._inode = offset, inode

    def read_new(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
                    self.offset = 0  # replaced or truncated below our offset: start over
                    self.restarts += 1
                self._inode = st.st_ino
                fh.seek(self.offset)
                data = fh.read() if max_bytes is None else fh.read(max_bytes)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.skipped += 1
                continue
            if isinstance(obj, dict) and "kind" in obj:
                events.append(obj)
            else:
                self.skipped += 1
        return events


def superseded(event: dict[str, Any], resumed: dict[str, Any]) -> bool:
    """Whether ``resumed`` (a later ``run_resumed``) replaces ``event``: progress past the
    step it continues from is redone after it."""
    return event.get("kind") in PROGRESS and (event.get("step") or 0) > (resumed.get("step") or 0)


def current(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log as it stands after every resume: each ``run_resumed`` drops the earlier
    progress events it supersedes (logs, starts and end records stay)."""
    out: list[dict[str, Any]] = []
    for event in events:
        if event.get("kind") == "run_resumed":
            out = [e for e in out if not superseded(e, event)]
        out.append(event)
    return out


def read_events(run_dir: Path | str) -> list[dict[str, Any]]:
    """A run's complete events as they stand after its resumes (see :func:`current`)."""
    return current(EventReader(Path(run_dir) / EVENTS_FILE).read_new())


def iter_kind(events: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (e for e in events if e.get("kind") == kind)


def append_resumed(
    run_dir: Path | str, epoch: int, step: int, checkpoint: str | None
) -> dict[str, Any] | None:
    """Before a resumed trainer's ``run_started``: record where it continues (``step`` 0,
    no checkpoint: from the start). Nothing is written for a run that has no log yet."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists() or path.stat().st_size == 0:
        return None
    writer = EventWriter(run_dir)
    try:
        return writer.emit("run_resumed", epoch=epoch, step=step, checkpoint=checkpoint)
    finally:
        writer.close()
