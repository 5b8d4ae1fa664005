"""The run supervisor: ``python -m sslterm.runs.supervise RUN_DIR -- CMD...``.

Started by the launcher in a new session (so an SSH hang-up or a closed TUI
never reaches it), it holds the run's lock, starts ``accelerate launch``,
waits for the whole process tree and writes the final, truthful status with
the error summary of whichever rank failed. SIGTERM/SIGINT/SIGHUP become a
graceful stop request (the STOP file).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sslterm.runs.events import read_events
from sslterm.runs.store import RunDir, hold_lock, utc_now


def _group_members(pgid: int) -> list[int]:
    """Other live processes of our process group (the trainer may outlive accelerate),
    not counting our parent: a Slurm batch script waits for us in the same group."""
    members, skip = [], {os.getpid(), os.getppid()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def rank_errors(run: RunDir) -> list[dict[str, Any]]:
    """The ``error-rank*.json`` records the ranks wrote before exiting (torn ones skipped)."""
    errors = []
    for path in sorted(run.path.glob("error-rank*.json")):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return errors


def is_collateral(record: dict[str, Any]) -> bool:
    """A rank that only saw its connection to an already failed rank break, or timed out
    waiting for it in a collective."""
    error = record["error"].lower()
    return any(word in error for word in ("connection", "timed out", "timeout"))


def root_cause(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The error that ended the run: a rank that fails first makes the others fail with
    collective errors, so the lowest rank whose error is not collateral, else the lowest."""
    ranked = sorted(errors, key=lambda e: e.get("rank", 0))
    return next((e for e in ranked if not is_collateral(e)), ranked[0])


def error_summary(run: RunDir, exit_code: int) -> str:
    errors = rank_errors(run)
    if errors:
        cause = root_cause(errors)
        return f"rank {cause['rank']}: {cause['error']}"
    tail = []
    with contextlib.suppress(OSError):
        tail = [ln for ln in run.stdout.read_text(errors="replace").splitlines() if ln.strip()]
    last = tail[-1][:300] if tail else ""
    return f"trainer exited with code {exit_code}" + (f": {last}" if last else "")


def final_state(run: RunDir, exit_code: int, signalled: bool = False) -> tuple[str, str]:
    """``signalled``: the supervisor itself got SIGTERM/SIGINT/SIGHUP (a scheduler signals the
    whole process group, so ``accelerate launch`` may die of it while the ranks stop cleanly)."""
    kinds = [e["kind"] for e in read_events(run.path)
             if e["kind"] in ("run_started", "run_finished", "run_stopped", "run_failed")]
    last = kinds[-1] if kinds else None
    stopping = signalled or run.read_status().get("state") == "stopping"
    if last == "run_finished":  # results.json is written before run_finished
        if exit_code == 0:
            return "finished", ""
        return "finished", f"results complete; then, shutting down: {error_summary(run, exit_code)}"
    if last == "run_stopped" and (exit_code == 0 or stopping):
        return "stopped", ""
    if exit_code < 0 and stopping:
        return "stopped", f"killed by signal {-exit_code} while stopping; resume from the last checkpoint"
    return "failed", error_summary(run, exit_code)


def supervise(run_dir: str, cmd: list[str]) -> int:
    run = RunDir(Path(run_dir))
    inherited = os.environ.pop("SSLTERM_LOCK_FD", None)
    lock_fd = int(inherited) if inherited else hold_lock(run)
    for stale in run.path.glob("error-rank*.json"):
        stale.unlink()
    run.stop_file.unlink(missing_ok=True)
    pgid = os.getpgid(0)
    run.update_status(state="running", pid=os.getpid(), pgid=pgid, host=socket.gethostname(),
                      started=utc_now(), ended=None, exit_code=None, error=None, user_error=None)

    signalled = False

    def request_stop(*_: object) -> None:
        nonlocal signalled
        signalled = True
        run.stop_file.touch()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
    deadline = time.time() + 60
    while _group_members(pgid) and time.time() < deadline:
        time.sleep(0.2)
    state, error = final_state(run, code, signalled)
    errors = rank_errors(run) if state == "failed" else []
    user_error = bool(errors) and bool(root_cause(errors).get("user"))
    run.update_status(state=state, ended=utc_now(), exit_code=code, error=error or None,
                      user_error=user_error or None)
    run.stop_file.unlink(missing_ok=True)
    os.close(lock_fd)
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m sslterm.runs.supervise RUN_DIR -- CMD...", file=sys.stderr)
        sys.exit(2)
    sys.exit(supervise(args[0], args[2:]))
