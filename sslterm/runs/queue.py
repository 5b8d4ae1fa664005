"""A run queue on disk, worked by a small detached process, so it outlives the TUI.

Layout, next to the run directories (``iter_runs`` ignores it: no status.json)::

    <output_dir>/.queue/
      <ns-timestamp>-<stem>.json   one pending item: the profile's TOML text as it
                                   was when queued, its file stem (the run's name),
                                   overrides, the working directory to start in, how
                                   many runs may run beside it and, for a sweep's
                                   item, the sweep and grid point it stands for
      history.jsonl                one line per item taken: the run it became, or why not
      runner.log                   what the runner printed
      .runner.lock                 flock held by the one live runner

Items are taken in file-name order (oldest first); :func:`move` reorders by
renaming an item between its new neighbours. The runner is
``python -m sslterm.runs.queue run OUTPUT_DIR``, started by :func:`ensure_runner`
in a new session with stdin from /dev/null, exactly like the launcher starts a
run's supervisor: closing the app or the SSH connection does not stop it. It
starts the next item only when no run of this host under the output folder is
running or stopping (runs started by hand count too: one GPU box, one run at a
time), or, for an item queued with ``parallel`` N (a sweep), while fewer than N
are, and exits when the queue is empty. Before exiting it drops its lock and
looks once more, so an item queued at that moment is never stranded (the
enqueuer starts a runner whenever the lock is free).

``python -m sslterm.runs.queue start PROFILE --output-dir DIR [--set K=V]`` starts
one run with the launcher's full checks (data paths, timm encoder name: these
import torch) in a separate process and prints one JSON line, so the torch-free
TUI can launch runs and still show the CLI's error message next to the field.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslterm.errors import ProfileError, UserError
from sslterm.files import atomic_write_text
from sslterm.runs.meta import RunMeta, meta_from_json
from sslterm.runs.store import ACTIVE, RunDir, check_output_dir, iter_runs, utc_now

QUEUE_DIR = ".queue"
_PKG_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class QueueItem:
    path: Path
    stem: str
    text: str
    overrides: tuple[str, ...]
    cwd: str
    queued: str
    source: str
    parallel: int = 1
    sweep: str = ""
    point: int | None = None
    meta: RunMeta = RunMeta()
    """The run's label, tags and note."""

    @property
    def id(self) -> str:
        return self.path.stem


def queue_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / QUEUE_DIR


def enqueue(
    output_dir: str | Path,
    text: str,
    stem: str,
    overrides: Sequence[str] = (),
    *,
    source: str = "",
    start_runner: bool = True,
    parallel: int = 1,
    sweep: str = "",
    point: int | None = None,
    meta: RunMeta | None = None,
    cwd: str | None = None,
) -> QueueItem:
    """Queue a profile (its text now, so later edits of the file do not change it).
    The text is validated first: a broken profile never enters the queue. ``parallel``:
    how many runs (this one included) may run at once when it starts; ``sweep`` and
    ``point``: the sweep and grid point it belongs to (:mod:`sslterm.runs.sweep`); ``meta``:
    the run's label, tags and note; ``cwd``: the folder it starts in (default: this one)."""
    from sslterm.profile.load import validate_text

    validate_text(text, source or f"{stem}.toml", overrides)
    check_output_dir(output_dir)
    qdir = queue_dir(output_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    item = {
        "stem": stem,
        "text": text,
        "overrides": list(overrides),
        "cwd": cwd or os.getcwd(),
        "queued": utc_now(),
        "source": source,
        "parallel": parallel,
        "sweep": sweep,
        "point": point,
        "meta": (meta or RunMeta()).to_json(),
    }
    path = qdir / f"{time.time_ns():020d}-{stem}.json"
    atomic_write_text(path, json.dumps(item))
    if start_runner:
        ensure_runner(output_dir)
    return _item(path, item)


def _item(path: Path, data: dict[str, Any]) -> QueueItem:
    return QueueItem(
        path,
        str(data.get("stem") or "profile"),
        str(data.get("text", "")),
        tuple(data.get("overrides") or ()),
        str(data.get("cwd") or os.getcwd()),
        str(data.get("queued", "")),
        str(data.get("source", "")),
        int(data.get("parallel") or 1),
        str(data.get("sweep") or ""),
        data.get("point"),
        meta_from_json(data.get("meta")),
    )


def pending(output_dir: str | Path) -> list[QueueItem]:
    """Queued items, next first."""
    qdir = queue_dir(output_dir)
    if not qdir.is_dir():
        return []
    items = []
    for path in sorted(qdir.glob("*.json")):
        try:
            items.append(_item(path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue  # removed or being written
    return items


def remove(item: QueueItem) -> bool:
    """Take an item out of the queue; False when the runner took it first."""
    try:
        item.path.unlink()
    except FileNotFoundError:
        return False
    return True


def _key(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def move(item: QueueItem, by: int) -> QueueItem | None:
    """Move ``item`` ``by`` places (negative: sooner), clamped to the queue's ends.

    The file is renamed to a key between its new neighbours' (one atomic rename;
    a runner listing at that moment just lists again). None when the runner took
    the item first."""
    items = pending(item.path.parent.parent)
    ids = [i.id for i in items]
    if item.id not in ids:
        return None
    here = ids.index(item.id)
    others = items[:here] + items[here + 1 :]
    to = min(max(here + by, 0), len(others))
    if to == here:
        return item
    lo = _key(others[to - 1].path) if to > 0 else None
    hi = _key(others[to].path) if to < len(others) else None
    if lo is None:
        key = max(hi - 1_000_000, 0)  # type: ignore[operator]
    elif hi is None:
        key = lo + 1_000_000
    else:
        key = (lo + hi) // 2
    if key in (lo, hi):
        return item  # no room between (items queued a nanosecond apart): leave it
    target = item.path.with_name(f"{key:020d}-{item.path.name.split('-', 1)[1]}")
    try:
        os.rename(item.path, target)
    except FileNotFoundError:
        return None
    return _item(target, json.loads(target.read_text(encoding="utf-8")))


def history(output_dir: str | Path, limit: int = 50) -> list[dict[str, Any]]:
    """The last items the runner took, newest last."""
    path = queue_dir(output_dir) / "history.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-limit:]:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _try_lock(output_dir: str | Path) -> int | None:
    qdir = queue_dir(output_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(qdir / ".runner.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def runner_alive(output_dir: str | Path) -> bool:
    fd = _try_lock(output_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_ROOT, env.get("PYTHONPATH")) if p)
    return env


def ensure_runner(output_dir: str | Path) -> bool:
    """Start the detached runner unless one holds the lock; True if one was started."""
    if runner_alive(output_dir):
        return False
    out = str(Path(output_dir).resolve())
    with open(queue_dir(out) / "runner.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "sslterm.runs.queue", "run", out],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_child_env(),
            close_fds=True,
        )
    return True


def active(output_dir: str | Path) -> int:
    """How many runs of this host under the output folder are starting, running or
    stopping (a starting run already holds its lock while its status still says queued)."""
    host = socket.gethostname()
    return sum(
        run.read_status().get("host") in (None, host)
        and (run.state()[0] in ACTIVE or run.is_locked())
        for run in iter_runs(output_dir)
    )


def busy(output_dir: str | Path, parallel: int = 1) -> bool:
    """``parallel`` runs (or more) of this host are active: the next item must wait."""
    return active(output_dir) >= parallel


def _reap() -> None:
    """Collect exited supervisors we started (they are our children)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def start_item(item: QueueItem, output_dir: str | Path) -> RunDir:
    """Start one queued profile through the launcher, from the directory it was queued in."""
    from sslterm.runs.launcher import start_run

    with tempfile.TemporaryDirectory(prefix="sslterm-queue-") as tmp:
        path = Path(tmp) / f"{item.stem}.toml"
        path.write_text(item.text, encoding="utf-8")
        os.chdir(item.cwd)
        return start_run(path, item.overrides, output_dir=str(output_dir), meta=item.meta)


def _record(output_dir: Path, item: QueueItem, **fields: Any) -> None:
    record = {"item": item.id, "stem": item.stem, "at": utc_now(), **fields}
    if item.sweep:
        record.update(sweep=item.sweep, point=item.point)
    line = json.dumps(record)
    with open(queue_dir(output_dir) / "history.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def run_queue(output_dir: str | Path, poll: float = 1.0) -> int:
    """The runner's loop (see the module docstring); returns when the queue is empty."""
    from sslterm.runs.launcher import wait_started

    out = Path(output_dir).resolve()
    fd = _try_lock(out)
    if fd is None:
        return 0
    try:
        while True:
            _reap()
            items = pending(out)
            if items and busy(out, items[0].parallel):
                time.sleep(poll)
                continue
            if not items:
                os.close(fd)
                fd = None
                if not pending(out):
                    return 0
                fd = _try_lock(out)
                if fd is None:
                    return 0  # another runner took over
                continue
            item = items[0]
            if not remove(item):
                continue
            try:
                run = start_item(item, out)
            except UserError as exc:
                print(f"{item.id}: {exc}", flush=True)
                _record(out, item, run=None, error=str(exc))
                continue
            print(f"{item.id}: started {run.id}", flush=True)
            _record(out, item, run=run.id, error=None)
            wait_started(run, timeout=120)
    finally:
        if fd is not None:
            os.close(fd)


# -- checked start in a separate process --------------------------------------------------
def _error_json(exc: UserError) -> dict[str, Any]:
    if isinstance(exc, ProfileError):
        return {
            "error": str(exc),
            "path": exc.path,
            "line": exc.line,
            "key": exc.key,
            "message": exc.message,
        }
    return {"error": str(exc)}


def start_checked(
    profile_path: str | Path,
    output_dir: str | Path,
    overrides: Sequence[str] = (),
    timeout: float = 600.0,
    meta: RunMeta | None = None,
) -> RunDir:
    """Start a run with the launcher's full checks in a child process (they import
    torch; the caller need not). Raises the same UserError/ProfileError the CLI shows."""
    cmd = [sys.executable, "-m", "sslterm.runs.queue", "start", str(profile_path)]
    cmd += ["--output-dir", str(output_dir)]
    for item in overrides:
        cmd += ["--set", item]
    if meta:
        cmd += ["--meta", json.dumps(meta.to_json())]
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(),
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not start the run: {tail}")
    result = json.loads(lines[-1])
    if "run" in result:
        return RunDir(Path(result["run"]))
    if result.get("message") is not None:
        raise ProfileError(result["path"], result["line"], result["key"], result["message"])
    raise UserError(result.get("error", "could not start the run"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslterm.runs.queue")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="work the queue until it is empty")
    run.add_argument("output_dir")
    start = sub.add_parser("start", help="start one run with full checks; print JSON")
    start.add_argument("profile")
    start.add_argument("--output-dir", required=True)
    start.add_argument("--set", dest="sets", action="append", default=[])
    start.add_argument("--meta", help="the run's label, tags and note as JSON")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_queue(args.output_dir)
    from sslterm.runs.launcher import start_run

    try:
        meta = meta_from_json(json.loads(args.meta)) if args.meta else None
        started = start_run(args.profile, args.sets, output_dir=args.output_dir, meta=meta)
    except UserError as exc:
        print(json.dumps(_error_json(exc)), flush=True)
        return exc.exit_code
    print(json.dumps({"run": str(started.path.resolve())}), flush=True)
    return 0


if __name__ == "__main__":
    from sslterm.process import exit_process

    exit_process(main())
