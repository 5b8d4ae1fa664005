"""Helpers for tests that start real runs through the real CLI and `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sslterm.runs.events import EventReader
from sslterm.runs.store import RunDir

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "profiles" / "smoke.toml"
# A method's smoke run that two processes can reproduce exactly: augmentation off (both see
# the same views of the same global batches), global-batch BatchNorm, a few LARS steps
EXACT_METHOD_RUN = [
    "model.encoder=test_vit", "train.epochs=1", "train.max_steps_per_epoch=4",
    "train.batch_size=32", "train.optimizer=lars", "train.base_lr=0.3",
    "train.weight_decay=1e-4", "train.warmup_epochs=0", "model.sync_batchnorm=true",
    "augment.crop=false", "augment.flip_p=0.0", "augment.color_p=0.0",
    "augment.grayscale_p=0.0",
]
# DINO's 16 px local views (smoke.toml's multi-crop) take the conv test encoder: the ViT runs
# too (tests/test_dino.py) but its tiny patch grid at 16 px says little
METHOD_ENCODER = {"dino": ["model.encoder=test_resnet"]}


def sslterm(*args: str, cwd: Path, timeout: float = 240, check: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")
    out = subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"sslterm {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def events(run: Path) -> list[dict[str, Any]]:
    """Complete events (a torn last line is not returned)."""
    return EventReader(run / "events.jsonl").read_new()


def tail(run: Path) -> str:
    log = run / "stdout.log"
    text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    return f"status: {RunDir(run).read_status()}\nstdout.log tail:\n{text}"


def wait_for(predicate: Callable[[], T], what: str, run: Path, timeout: float = 300) -> T:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail(run)}")


def state(run_dir: Path) -> str:
    return RunDir(run_dir).state()[0]


def only_run(output_dir: Path) -> Path:
    runs = [p for p in output_dir.iterdir() if (p / "status.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]


STAND_IN = """
import os, sys, time
from pathlib import Path
from sslterm.runs.store import RunDir, hold_lock, utc_now
run = RunDir(Path(sys.argv[1]))
hold_lock(run)
run.update_status(state="running", pid=os.getpid(), pgid=os.getpgid(0))
honours_stop = sys.argv[2] == "yes"
while not (honours_stop and run.stop_file.exists()):
    time.sleep(0.05)
run.update_status(state="stopped", ended=utc_now())
"""


def start_stand_in(run_dir: Path, honours_stop: bool = True) -> subprocess.Popen:
    """A stand-in supervisor (no training) in its own session: it holds the run's lock,
    says running and, if it honours stops, ends as stopped once STOP appears. Returns
    when its process group is recorded."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(run_dir), "yes" if honours_stop else "no"],
        cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while json.loads((run_dir / "status.json").read_text()).get("pgid") is None:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc
