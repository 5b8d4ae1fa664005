"""``sslterm search``: the space file's errors, and (slow) a real 4-trial Optuna search through
the real queue on smoke runs, its driver killed and resumed, one trial pruned early."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from runhelpers import SMOKE, wait_for

from sslterm.errors import UserError
from sslterm.runs import queue
from sslterm.runs.events import read_events
from sslterm.runs.meta import read_meta
from sslterm.runs.store import RunDir
from sslterm.runs.sweep import find_sweep, sweep_status

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]
# the smallest trial that still validates at every epoch; 2 classes learn, 64 cannot (kNN ~0):
# with the random sampler's seed 10 the trials are 2, 64, 2, 64 (and again after a resume)
TRIAL = ["train.epochs=20", "train.max_steps_per_epoch=1", "probe.enabled=false",
         "data.synthetic_size=128", "train.batch_size=32", "probe.knn_k=5",
         "train.checkpoint_interval=0", "train.val_interval=1"]
SPACE = "[data]\nsynthetic_classes = { choices = [2, 64] }\n"


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1"))


@pytest.mark.parametrize(("space", "message"), [
    ("[train]\nbase_rl = { low = 0.1, high = 1.0 }\n", "space.toml:2: train.base_rl: not a profile key"),
    ("[train]\nbase_lr = { low = 1.0, high = 0.1 }\n",
     "space.toml:2: train.base_lr: low and high: two numbers, low < high"),
    ("[train]\nbase_lr = { low = 0.0, high = 1.0, log = true }\n",
     "space.toml:2: train.base_lr: log = true needs low > 0 and no step"),
    ("[train]\nbatch_size = { choices = [64] }\n",
     "space.toml:2: train.batch_size: choices: a list of two values or more"),
    ("[train]\nbatch_size = { choices = [64, -1] }\n", "train.batch_size"),  # the profile refuses -1
])
def test_a_bad_space_is_one_line_and_records_nothing(tmp_path: Path, space: str,
                                                     message: str) -> None:
    (tmp_path / "space.toml").write_text(space)
    out = tmp_path / "runs"
    done = cli("-o", str(out), "search", str(SMOKE), "--space", "space.toml", "--trials", "2",
               cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (out / ".sweeps").exists() and not queue.pending(out)


def test_resume_refuses_a_sweep(tmp_path: Path) -> None:
    from sslterm.runs.search import Driver
    from sslterm.runs.sweep import create_sweep, parse_axes

    sweep = create_sweep(tmp_path, SMOKE, parse_axes(["train.epochs=1,2"]), start_runner=False)
    with pytest.raises(UserError, match="is a sweep, not a search"):
        Driver(tmp_path, sweep)


@pytest.mark.slow
def test_a_search_through_the_real_queue_prunes_a_trial_and_resumes_after_a_kill(
        tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (tmp_path / "space.toml").write_text(SPACE)
    log = open(tmp_path / "search.log", "w")  # noqa: SIM115 - the driver's output, read on failure
    driver = subprocess.Popen(
        [sys.executable, "-m", "sslterm", "-o", str(out), "search", str(SMOKE), "--space",
         "space.toml", "--trials", "4", "--parallel", "2", "--sampler", "random", "--seed", "10",
         "--startup-trials", "1", "--label", "classes", *TRIAL],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        search = wait_for(lambda: (out / ".sweeps").is_dir() and next(iter(
            (out / ".sweeps").glob("*.json")), None), "the search record", tmp_path, timeout=120)
        # killed once both first trials were queued and one of them has its run
        wait_for(lambda: any(p.run for p in sweep_status(find_sweep(None, out), out))
                 and len(find_sweep(None, out).points) == 2, "a trial's run", tmp_path, timeout=300)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        log.close()
    sweep = find_sweep(None, out)
    assert sweep.kind == "search" and search.stem == sweep.id
    assert len(optuna.load_study(study_name=sweep.id,
                                 storage=f"sqlite:///{search.with_suffix('.db')}").trials) == 2

    fig = tmp_path / "trials.svg"
    done = cli("-o", str(out), "search", "--resume", sweep.id, "--out", str(fig), cwd=tmp_path,
               timeout=600)
    assert done.returncode == 0, f"{(tmp_path / 'search.log').read_text()}\n{done.stdout}\n{done.stderr}"
    study = optuna.load_study(study_name=sweep.id, storage=f"sqlite:///{search.with_suffix('.db')}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and "FAIL" not in states, (states, done.stdout)
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 2, (states, done.stdout)

    points = sweep_status(find_sweep(sweep.id, out), out)
    for trial, point in zip(study.trials, points, strict=True):
        run = point.run
        assert run is not None and read_meta(run).label == f"classes trial {trial.number}"
        assert "search" in read_meta(run).tags
        if trial.state.name == "PRUNED":  # stopped early and marked so
            assert point.state == "pruned" and RunDir(run.path).state()[0] == "stopped"
            assert "pruned" in read_meta(run).tags
            stopped = [e for e in read_events(run.path) if e["kind"] == "run_stopped"]
            assert stopped and stopped[-1]["epoch"] < 10
        else:
            assert point.state == "finished"
            assert trial.value == json.loads(run.results.read_text())["final"]["knn"]["val_top1"]
    table = done.stdout[done.stdout.index(f"search {sweep.id}"):]
    assert "pruned" in table and sum(" finished " in line for line in table.splitlines()) >= 2
    assert ET.parse(fig).getroot().tag.endswith("svg")
    shown = cli("-o", str(out), "sweep", "--show", sweep.id, cwd=tmp_path)  # beside the sweeps
    assert shown.returncode == 0 and "pruned" in shown.stdout
    wait_for(lambda: not queue.runner_alive(out), "the queue runner to exit", tmp_path, timeout=60)
