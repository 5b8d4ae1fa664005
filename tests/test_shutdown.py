"""The final status when a trainer process dies after the run's final event, and the one
root-cause rule for failed ranks (issue 11 items 17 and 12).

The supervisor here is the real one (``python -m sslterm.runs.supervise``); its child is a
short Python process that writes the run's events as the trainer does and then dies as a
rank did at exit (SIGABRT: "terminate called without an active exception").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runhelpers import ROOT

from sslterm.runs.store import RunDir
from sslterm.runs.supervise import error_summary
from sslterm.train.ranks import root_cause

CHILD = """
import json, os, sys
from pathlib import Path
from sslterm.runs.events import EventWriter
run = Path(sys.argv[1])
events = EventWriter(run)
events.emit("run_started", run_id=run.name)
if sys.argv[2] == "finished":
    (run / "results.json").write_text(json.dumps({"final": {}}))
    events.emit("run_finished", epoch=0, step=1, results={})
events.close()
print("terminate called without an active exception", flush=True)
os.abort()
"""


def _supervise(tmp_path: Path, ends: str) -> tuple[int, dict]:
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "stdout.log", "w") as log:
        code = subprocess.run(
            [sys.executable, "-m", "sslterm.runs.supervise", str(run), "--",
             sys.executable, "-c", CHILD, str(run), ends],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=120, start_new_session=True,
        ).returncode
    return code, RunDir(run).read_status()


def test_a_process_dying_after_run_finished_leaves_the_run_finished(tmp_path: Path) -> None:
    """The results are complete; the abort is said, not turned into a failed run."""
    code, status = _supervise(tmp_path, "finished")
    assert (code, status["state"], status["exit_code"]) == (0, "finished", -6)
    assert status["error"].startswith("results complete; then, shutting down: "), status
    assert "terminate called" in status["error"]


def test_a_process_dying_before_run_finished_fails_the_run(tmp_path: Path) -> None:
    code, status = _supervise(tmp_path, "unfinished")
    assert (code, status["state"], status["exit_code"]) == (1, "failed", -6)


@pytest.mark.parametrize(
    ("errors", "cause"),
    [
        ({0: "RuntimeError: Connection closed by peer", 1: "injected fault"}, 1),
        ({0: "out of memory", 1: "injected fault"}, 0),
        ({0: "Connection reset", 1: "Connection closed by peer"}, 0),
        ({2: "injected fault", 1: "Connection reset", 0: "Connection reset"}, 2),
    ],
)
def test_trainer_and_supervisor_name_the_same_root_cause(tmp_path, errors, cause) -> None:
    run = RunDir(tmp_path)
    for rank, error in errors.items():
        record = {"rank": rank, "error": error, "traceback": ""}
        (tmp_path / f"error-rank{rank}.json").write_text(json.dumps(record))
    assert error_summary(run, 1) == f"rank {cause}: {errors[cause]}"
    for rank in errors:  # whichever rank is the main one and reports run_failed
        own = json.loads((tmp_path / f"error-rank{rank}.json").read_text())
        assert root_cause(run, own, wait=0.0)["rank"] == cause
