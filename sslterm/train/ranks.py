"""Failures across the ranks of a run: each rank's error record, the run's root cause, and
no rank left behind when its launcher dies."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import Any

from sslterm.errors import TrainingError, UserError
from sslterm.runs.store import RunDir, atomic_write_text
from sslterm.runs.supervise import is_collateral, rank_errors
from sslterm.runs.supervise import root_cause as first_failure


def write_rank_error(run: RunDir, rank: int, exc: BaseException) -> dict[str, str]:
    """Record this rank's failure (``error-rank<N>.json``) for the supervisor and the others:
    a user's or training error by its message alone, anything else by type and message."""
    summary = (
        str(exc) if isinstance(exc, (UserError, TrainingError))
        else f"{type(exc).__name__}: {exc}"
    )
    record = {"rank": rank, "error": summary.splitlines()[0] if summary else type(exc).__name__,
              "traceback": "".join(traceback.format_exception(exc))[-4000:],
              "user": isinstance(exc, UserError)}  # input to fix: the CLI exits 2
    atomic_write_text(run.path / f"error-rank{rank}.json", json.dumps(record, indent=2))
    return record


def root_cause(run: RunDir, record: dict[str, Any], wait: float = 3.0) -> dict[str, Any]:
    """The run's root cause by the supervisor's rule (:func:`sslterm.runs.supervise.root_cause`),
    waiting up to ``wait`` s for the failed rank's record when this rank only saw its
    connection break (a rank writes its record before it exits and closes its sockets)."""
    deadline = time.time() + wait
    while True:
        cause = first_failure([record, *rank_errors(run)])
        if not is_collateral(cause) or time.time() >= deadline:
            return cause
        time.sleep(0.1)


def die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own, out of reach of a signal to the
    run's process group (``sslterm kill``, a SIGKILL to the supervisor's group): on Linux,
    have the kernel SIGKILL such a rank when its launcher dies, so none is left behind."""
    if not sys.platform.startswith("linux") or os.getsid(0) != os.getpid():
        return  # in the run's process group (one process): SIGTERM still stops it gracefully
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if parent == 1 or os.getppid() != parent:  # the launcher died before that
        os._exit(1)
