"""Helpers for fault-injection tests: real runs through the real CLI, real signals.

The ``SSLTERM_FAULT_*`` variables passed in ``env`` reach every rank of the run
(launcher -> supervisor -> accelerate -> trainer); see sslterm/train/engine.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from runhelpers import SMOKE, events, wait_for

from sslterm.runs.checkpoints import TMP_PREFIX, newest_checkpoint
from sslterm.runs.events import current
from sslterm.runs.store import RunDir

ENDED = ("finished", "failed", "stopped")
# 16 images a step, a loss and a stop check every step, a checkpoint every epoch, no eval.
TINY = ("train.batch_size=16", "probe.enabled=false", "train.val_interval=0",
        "train.checkpoint_interval=1", "train.log_every=1")


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLTERM_FAULT_")}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="120")
    env.update(extra or {})
    return env


def cli(out: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``sslterm -o OUT ARGS...`` run to completion."""
    return subprocess.run([sys.executable, "-m", "sslterm", "-o", str(out), *args],
                          cwd=out.parent, capture_output=True, text=True, timeout=timeout,
                          env=cli_env(env))


def cli_bg(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``sslterm -o OUT ARGS...`` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "sslterm", "-o", str(out), *args],
                            cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env(env))


def require_hooks(env: dict[str, str] | None) -> None:
    """Fail at once (not after a long wait) when the trainer lacks the fault hooks."""
    if env and any(k.startswith("SSLTERM_FAULT_") for k in env):
        spec = importlib.util.find_spec("sslterm.train.engine")
        assert spec and spec.origin
        if "SSLTERM_FAULT_" not in Path(spec.origin).read_text():
            pytest.fail("sslterm/train/engine.py lacks the SSLTERM_FAULT_* hooks", pytrace=False)


def start(out: Path, *overrides: str, env: dict[str, str] | None = None) -> Path:
    """``sslterm run SMOKE TINY... OVERRIDES... --detach``; returns the run directory."""
    require_hooks(env)
    out.mkdir(parents=True, exist_ok=True)
    res = cli(out, "run", str(SMOKE), *TINY, *overrides, "--detach", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return out / res.stdout.strip().splitlines()[-1]


def resume(run: Path, *sets: str, env: dict[str, str] | None = None) -> None:
    require_hooks(env)
    args = ["resume", run.name, "--detach"]
    for s in sets:
        args += ["--set", s]
    res = cli(run.parent, *args, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


def since_start(run: Path, starts: int) -> list[dict[str, Any]] | None:
    """Events after the ``starts``-th ``run_started`` (None until it is there)."""
    evs = events(run)
    idx = [i for i, e in enumerate(evs) if e["kind"] == "run_started"]
    return evs[idx[starts - 1]:] if len(idx) >= starts else None


def wait_step(run: Path, step: int, starts: int, timeout: float = 300) -> list[dict[str, Any]]:
    """Wait for a ``step`` event >= ``step`` written by the ``starts``-th launch."""
    def seen() -> list[dict[str, Any]] | None:
        evs = since_start(run, starts)
        return evs if evs and any(e["kind"] == "step" and e["step"] >= step for e in evs) else None
    return wait_for(seen, f"step {step} of launch {starts}", run, timeout)


def ended(run: Path) -> str | None:
    """The run's final state once its supervisor is gone, else None."""
    r = RunDir(run)
    state = r.state()[0]
    return state if state in ENDED and not r.is_locked() else None


def wait_ended(run: Path, timeout: float = 300) -> str:
    return wait_for(lambda: ended(run), "the run to end", run, timeout)


def processes(run: Path) -> list[tuple[int, str]]:
    """Live processes whose command line names the run directory (supervisor, launcher, ranks)."""
    needle = str(run).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if needle in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]))
    return found


def wait_gone(run: Path, timeout: float = 60) -> None:
    """No process names the run and its lock is free. Both: an exiting process drops
    its command line (exit_mm) before its open files (exit_files, the lock)."""
    wait_for(lambda: not processes(run) and not RunDir(run).is_locked(),
             "every process of the run to exit", run, timeout)


def kill_leftovers(run: Path) -> None:
    """Teardown: SIGKILL what a failed test left running (only this run's processes)."""
    for pid, _ in processes(run):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def signal_group(run: Path, sig: int) -> None:
    """What a scheduler or ``kill -SIG -PGID`` does: signal the run's process group."""
    os.killpg(RunDir(run).read_status()["pgid"], sig)


def newest(run: Path) -> tuple[str, int] | None:
    """The checkpoint a resume would pick: (folder name, global step)."""
    found = newest_checkpoint(run / "checkpoints")
    if found is None:
        return None
    path, state = found
    assert not path.name.startswith(TMP_PREFIX) and (path / "COMPLETE").exists(), path
    return path.name, state["global_step"]


def partial_checkpoints(run: Path) -> list[str]:
    ckpts = run / "checkpoints"
    return sorted(p.name for p in ckpts.iterdir() if p.name.startswith(TMP_PREFIX)) \
        if ckpts.is_dir() else []


def assert_whole_log(run: Path, epochs: int, steps_per_epoch: int) -> list[dict[str, Any]]:
    """Every line parses, every epoch once, steps 1..N without gaps or repeats."""
    raw = (run / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n"), raw[-200:]
    evs = current([json.loads(line) for line in raw.splitlines()])
    got_epochs = [e["epoch"] for e in evs if e["kind"] == "epoch"]
    assert got_epochs == list(range(epochs)), got_epochs
    got_steps = [e["step"] for e in evs if e["kind"] == "step"]
    assert got_steps == list(range(1, epochs * steps_per_epoch + 1)), got_steps
    return evs


def one_line_error(run: Path, *needles: str) -> str:
    """status.json's error: one line that contains every needle (case-insensitive)."""
    error = RunDir(run).read_status().get("error") or ""
    assert error and "\n" not in error and "Traceback" not in error, error
    for needle in needles:
        assert needle.lower() in error.lower(), (needle, error)
    return error


def step_losses(run: Path, n: int | None = None) -> list[float]:
    return [e["loss"] for e in events(run) if e["kind"] == "step"][:n]


def overrides_for(epochs: int, steps: int, *more: str) -> Sequence[str]:
    return (f"train.epochs={epochs}", f"train.max_steps_per_epoch={steps}", *more)
