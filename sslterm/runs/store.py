"""Run directories: the one contract between the trainer and everything that watches it.

Layout (see docs/events.md)::

    runs/<run-id>/profile.toml  status.json  events.jsonl  stdout.log
                  checkpoints/  results.json  features/  meta.json  STOP  .lock

``status.json`` is replaced atomically (temp file + ``os.replace``), so a
reader never sees half of it. Liveness is decided by the run's lock file: the
supervisor holds an exclusive ``flock`` on ``.lock`` for as long as the run
lives, so a SIGKILLed run is never reported as running.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sslterm.errors import UserError
from sslterm.files import atomic_write_text

STATES = ("queued", "running", "stopping", "finished", "failed", "stopped")
ACTIVE = ("running", "stopping")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def profile(self) -> Path:
        return self.path / "profile.toml"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def stdout(self) -> Path:
        return self.path / "stdout.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def features(self) -> Path:
        return self.path / "features"

    @property
    def meta_file(self) -> Path:
        """Label, tags and note (:mod:`sslterm.runs.meta`), apart from the frozen profile."""
        return self.path / "meta.json"

    @property
    def stop_file(self) -> Path:
        return self.path / "STOP"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    # -- status -----------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def update_status(
        self, *, when: Collection[str] | None = None, **fields: Any
    ) -> dict[str, Any] | None:
        """Read, update and write status.json under a lock: the launcher, the supervisor
        and every open app may write at once. With ``when``, only while the recorded
        state is one of those (None when it was not: the run ended meanwhile)."""
        fd = os.open(self.path / ".status.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            status = self.read_status()
            if when is not None and status.get("state", "queued") not in when:
                return None
            status.update(fields)
            atomic_write_text(self.status_file, json.dumps(status, indent=2) + "\n")
            return status
        finally:
            os.close(fd)

    def is_locked(self) -> bool:
        """True while some process holds the run's lock (the run is alive on this host)."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def state(self) -> tuple[str, str]:
        """The truthful state and error summary as this host sees it: a run whose recorded
        host is this one but whose lock is free died without finishing ('failed').

        A run held elsewhere (a Slurm job) is only as true as its status.json here; ask
        :func:`sslterm.runs.scheduler.run_state` for the scheduler's view."""
        status = self.read_status()
        if status.get("state") in ACTIVE and status.get("host") == socket.gethostname():
            if self.is_locked():
                return status["state"], status.get("error") or ""
            # The supervisor writes the final status, then releases the lock: a free lock
            # seen after an active status may belong to a run that ended between the two
            # reads. Only the status read after the lock was found free tells.
            status = self.read_status()
            if status.get("state") in ACTIVE:
                error = status.get("error") or ""
                return "failed", error or f"trainer process {status.get('pid')} died without finishing"
        return status.get("state", "queued"), status.get("error") or ""


def hold_lock(run: RunDir) -> int:
    """Take the run's exclusive lock or raise: two trainers never run one directory."""
    fd = os.open(run.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = run.read_status().get("pid")
        raise UserError(f"run {run.id} is already running (pid {pid})") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _not_a_folder(path: Path) -> tuple[Path, str | None]:
    """The nearest existing folder of ``path`` (itself or a parent), and why ``path`` can
    never be a folder when a file stands in the way."""
    probe_in = path
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if probe_in.is_dir():
        return probe_in, None
    return probe_in, f"{'' if probe_in == path else f'{probe_in} '}is a file, not a folder"


def output_dir_problem(output_dir: Path | str) -> str | None:
    """Why run directories cannot be made in ``output_dir``, or None when they can.

    Tried for real (a probe folder made and removed in the folder, or in its nearest
    existing parent): permission bits alone do not tell (root on /sys or /proc)."""
    probe_in, problem = _not_a_folder(Path(output_dir).expanduser().absolute())
    if problem:
        return problem
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sslterm-probe-", dir=probe_in))
    except OSError as exc:
        return f"cannot create folders in {probe_in} ({exc.strerror or exc})"
    return None


def check_output_dir(output_dir: Path | str) -> None:
    """Raise a one-line ``UserError`` when runs cannot be created in ``output_dir``."""
    problem = output_dir_problem(output_dir)
    if problem:
        raise UserError(f"output folder {output_dir}: {problem}")


def check_runs_folder(output_dir: Path | str) -> None:
    """A folder to list runs from: missing is fine (no runs yet), a file in its way is not."""
    _, problem = _not_a_folder(Path(output_dir).expanduser().absolute())
    if problem:
        raise UserError(f"output folder {output_dir}: {problem}")


def new_run_dir(output_dir: Path | str, name: str) -> RunDir:
    """Create ``<name>-<UTC timestamp>[-n]``; ``mkdir`` is atomic, so runs started
    in the same second still get distinct directories."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # checked before launch; this is the race or the odd file system
        raise UserError(f"output folder {output_dir}: {output_dir_problem(out) or exc}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = f"{name}-{stamp}"
    for n in range(1000):
        path = out / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"output folder {output_dir}: {output_dir_problem(out) or exc}") from None
        return RunDir(path)
    raise UserError(f"{out}: could not create a run directory for {name}")


def iter_runs(output_dir: Path | str) -> Iterator[RunDir]:
    out = Path(output_dir)
    if not out.is_dir():
        return
    for path in sorted(out.iterdir()):
        if path.is_dir() and (path / "status.json").exists():
            yield RunDir(path)


def find_run(ref: str, output_dir: Path | str) -> RunDir:
    """A run by path, by id under output_dir, or by a unique id prefix."""
    path = Path(ref)
    if (path / "status.json").exists():
        return RunDir(path)
    runs = [r for r in iter_runs(output_dir) if r.id == ref]
    if not runs:
        runs = [r for r in iter_runs(output_dir) if r.id.startswith(ref)]
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise UserError(f"no run {ref!r} under {output_dir}")
    raise UserError(f"run {ref!r} is ambiguous: {', '.join(r.id for r in runs[:5])}")
