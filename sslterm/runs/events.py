"""The event log: one JSON object per line in ``events.jsonl``, append-only.

The trainer (global rank 0 only) appends; every watcher reads incrementally
from a byte offset, so following a long run costs only the new bytes. A torn
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

SCHEMA_VERSION = 1
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
)


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every reader can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no trailing newline) off the log; returns bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        else:
            keep = 0
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


def read_events(run_dir: Path | str) -> list[dict[str, Any]]:
    """All complete events of a run (for tests and small tools)."""
    return EventReader(Path(run_dir) / EVENTS_FILE).read_new()


def iter_kind(events: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (e for e in events if e.get("kind") == kind)


_REDONE = {"step", "epoch", "val", "probe", "checkpoint"}


def truncate_after_checkpoint(
    run_dir: Path | str, checkpoint: str | None, step: int | None = None
) -> int:
    """Before a resume: drop the progress events written after ``checkpoint``'s own
    event (that work is redone), keeping logs and earlier stop/failure records.
    ``None`` (no checkpoint: start over) drops every progress event. A checkpoint
    committed without its event (the trainer was killed in between) keeps the
    progress up to its global ``step``. The file is replaced atomically; returns
    how many events were dropped."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return 0
    repair_tail(path)
    lines = path.read_bytes().splitlines(keepends=True)
    cut = 0
    if checkpoint is not None:
        for n, line in enumerate(lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("kind") == "checkpoint" and event.get("path", "").endswith(checkpoint):
                cut = n + 1
    if checkpoint is not None and cut == 0 and step is not None:
        for n, line in enumerate(lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("kind") in _REDONE and (event.get("step") or 0) <= step:
                cut = n + 1
    kept, dropped = lines[:cut], 0
    for line in lines[cut:]:
        try:
            kind = json.loads(line).get("kind")
        except ValueError:
            dropped += 1
            continue
        if kind in _REDONE:
            dropped += 1
        else:
            kept.append(line)
    tmp = path.with_name(f".{EVENTS_FILE}.tmp")
    with open(tmp, "wb") as fh:
        fh.writelines(kept)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return dropped
