"""Failures across the ranks of a run: each rank's error record, the run's root cause, and
no rank left behind when its launcher dies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from sslterm.errors import TrainingError, UserError
from sslterm.files import atomic_write_text
from sslterm.runs.store import RunDir
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


def root_cause(run: RunDir, record: dict[str, Any], wait: float = 3.0,
               peers: Callable[[], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The run's root cause by the supervisor's rule (:func:`sslterm.runs.supervise.root_cause`),
    waiting up to ``wait`` s for the failed rank's record when this rank only saw its
    connection break (a rank writes its record before it exits and closes its sockets);
    then ``peers`` (:meth:`PeerWatch.records`) adds the records of ranks on other machines."""
    deadline = time.time() + wait
    while True:
        cause = first_failure([record, *rank_errors(run)])
        if not is_collateral(cause):
            return cause
        if peers is not None:  # they wait for the records themselves
            found = peers()
            for peer in found:  # for the supervisor, which reads this run directory only
                path = run.path / f"error-rank{peer['rank']}.json"
                if not path.exists():
                    atomic_write_text(path, json.dumps(peer, indent=2))
            return first_failure([record, *rank_errors(run), *found])
        if time.time() >= deadline:
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


BEAT_SECONDS = 1.0


class PeerWatch:
    """Each rank's heartbeat and error record in the launch's rendezvous store, which every
    machine reaches: a rank on another machine (no shared run directory) can still say
    which rank failed and why, and a rank that died without a word (SIGKILL, the
    out-of-memory killer) is told by its heartbeat, which stopped."""

    def __init__(self, rank: int, world: int) -> None:
        from datetime import timedelta

        import torch.distributed as dist

        self.rank, self.world = rank, world
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        self._connect = lambda: dist.TCPStore(host, port, is_master=False,
                                              timeout=timedelta(seconds=10))
        self.store = self._connect()
        self._beating = threading.Event()
        threading.Thread(target=self._beat, daemon=True, name="sslterm-heartbeat").start()

    def _beat(self) -> None:
        store = self._connect()  # a client of its own: the store is not shared between threads
        while not self._beating.wait(BEAT_SECONDS):
            try:
                store.add(f"sslterm/beat/{self.rank}", 1)
            except Exception:  # the store's host is gone: the run is ending anyway
                return

    def stop(self) -> None:
        self._beating.set()

    def publish(self, record: dict[str, Any]) -> None:
        """This rank's error record, for the ranks on other machines."""
        with contextlib.suppress(Exception):
            self.store.set(f"sslterm/error/{self.rank}", json.dumps(record))

    def records(self) -> list[dict[str, Any]]:
        """The error records of the other ranks, and one for each rank whose heartbeat
        stopped without a record (it died without a word): the ranks' own words where
        they had time to say them."""
        try:
            def counts() -> list[int]:
                return [self.store.add(f"sslterm/beat/{r}", 0) for r in range(self.world)]

            found: dict[int, dict[str, Any]] = {}
            before, deadline = counts(), time.time() + 3 * BEAT_SECONDS + 0.5
            while time.time() < deadline:
                time.sleep(0.2)
                for r in range(self.world):
                    key = f"sslterm/error/{r}"
                    if r != self.rank and r not in found and self.store.check([key]):
                        found[r] = json.loads(self.store.get(key))
            after = counts()
        except Exception:
            return []
        for r in range(self.world):
            if r != self.rank and r not in found and after[r] == before[r]:
                found[r] = {"rank": r, "traceback": "", "error": (
                    "stopped without an error record (killed by a signal, such as the "
                    "out-of-memory killer, or its machine failed)")}
        return list(found.values())
