"""Slurm's side of a run: submit, ask and cancel a run's batch job.

A Slurm run's supervisor lives on the job's first node, so from a login node the
run's lock and process group say nothing: there, Slurm is asked (:func:`run_state`;
the run directory itself, ``RunDir.state``, knows nothing of Slurm). Every tool is run
as an argument list (never a shell), with a timeout; squeue's answers are cached
for ``CACHE_SECONDS`` because the app asks about every run every second.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sslterm.errors import UserError
from sslterm.runs.store import ACTIVE, RunDir

SCRIPT_NAME = "slurm.sbatch"
CACHE_SECONDS = 15.0
TIMEOUT = 10.0
_JOB_ID = re.compile(r"Submitted batch job (\d+)")
_cache: dict[str, tuple[float, str | None]] = {}
_cache_lock = threading.Lock()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=TIMEOUT, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    why = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
    return " ".join(why.split())[:300]


def run_state(run: RunDir) -> tuple[str, str]:
    """``run.state()``, corrected by Slurm where it knows better: a run that is queued, or
    active on another host, whose job Slurm has forgotten ended without sslterm
    (cancelled, or its node died)."""
    state, error = run.state()
    status = run.read_status()
    job = status.get("slurm_job_id")
    remote = status.get("host") != socket.gethostname()
    if job and (state == "queued" or (state in ACTIVE and remote)) and job_state(str(job)) == "":
        return "failed", error or (
            f"Slurm job {job} ended without a final status (cancelled, or its node failed)"
        )
    return state, error


def unsubmitted(run: RunDir) -> bool:
    """A run whose batch script was written but never submitted through sslterm: queued,
    with no job id and nothing holding its lock, so nothing will ever start it."""
    status = run.read_status()
    return ((run.path / SCRIPT_NAME).is_file() and not status.get("slurm_job_id")
            and status.get("state", "queued") == "queued" and not run.is_locked())


def submit(script: Path) -> str:
    """``sbatch SCRIPT``; the job id, or a UserError with sbatch's own words."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError(f"Slurm's sbatch is not on PATH (the job script is {script})")
    done = _run([sbatch, str(script)])
    if done is None:
        raise UserError(f"sbatch did not answer within {TIMEOUT:.0f} s")
    found = _JOB_ID.search(done.stdout)
    if done.returncode != 0 or not found:
        raise UserError(f"sbatch failed: {_one_line(done)}")
    return found.group(1)


def job_state(job_id: str) -> str | None:
    """Slurm's state of the job (``PENDING``, ``RUNNING``, ...); ``""`` once Slurm no
    longer knows it (ended and purged); None where Slurm cannot be asked."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(job_id)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    squeue = shutil.which("squeue")
    done = None if squeue is None else _run([squeue, "-h", "-j", job_id, "-o", "%T"])
    if done is None:
        state = None
    elif done.returncode == 0:
        state = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    else:
        state = "" if "invalid job id" in done.stderr.lower() else None
    with _cache_lock:
        _cache[job_id] = (now, state)
    return state


def cancel(job_id: str, *, kill: bool) -> None:
    """``scancel`` the job. ``kill``: SIGKILL to every step and the batch script at once
    (a running job); otherwise Slurm's own cancel (a pending job leaves the queue)."""
    scancel = shutil.which("scancel")
    if scancel is None:
        raise UserError(f"Slurm's scancel is not on PATH (job {job_id})")
    argv = [scancel, "--full", "--signal=KILL", job_id] if kill else [scancel, job_id]
    done = _run(argv)
    with _cache_lock:  # its state changes now
        _cache.pop(job_id, None)
    if done is None or done.returncode != 0:
        why = "no answer" if done is None else _one_line(done)
        raise UserError(f"scancel {job_id} failed: {why}")


def mark_requeued(run: RunDir, job: str) -> bool:
    """Called by the batch script after a signal stopped the run: a run that stopped (not
    finished, not failed) is marked queued again under its job, which the script then
    requeues. Returns whether it should."""
    if not job or run.read_status().get("state") != "stopped":
        return False
    run.update_status(state="queued", slurm_job_id=job, pid=None, pgid=None, error=None,
                      ended=None)
    return True


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "requeue":
        sys.exit("usage: python -m sslterm.runs.scheduler requeue RUN_DIR JOB_ID")
    sys.exit(0 if mark_requeued(RunDir(Path(sys.argv[2])), sys.argv[3]) else 1)
