"""BYOL, MoCo v3 and SimSiam end to end through the real CLI and `accelerate launch`.

Per method, one run in one process and the same run in two (module-scoped: the runs are
the expensive part), each a smoke run that validates and probes at its end:

- the one-process run leaves a complete run directory, with the method's own scalars (the
  teacher's momentum) in the step events and its val metrics in results.json;
- two processes train like one. Augmentation is off so both see the same views of the same
  global batches; the heads' BatchNorm is over the global batch in both
  (``model.sync_batchnorm``: on CPUs a GlobalBatchNorm, see sslterm/models/norm.py), and
  MoCo v3's keys are gathered from both processes, so losses and weights must agree;
- a BYOL run stopped mid-epoch and resumed gives the losses of the uninterrupted one: the
  teacher comes back from the checkpoint exactly.
"""

from __future__ import annotations

import json

import pytest
import torch
from faulthelpers import cli, start, step_losses, wait_ended, wait_step
from runhelpers import SMOKE, events, only_run, sslterm
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

MOMENTUM = {"byol", "mocov3"}
VAL_METRICS = {"byol": ("cosine", "z_std"), "mocov3": ("top1",), "simsiam": ("cosine", "z_std")}
STEPS = 4
SAME = [
    "model.encoder=test_vit", "train.epochs=1", f"train.max_steps_per_epoch={STEPS}",
    "train.batch_size=32", "train.optimizer=lars", "train.base_lr=0.3",
    "train.weight_decay=1e-4", "train.warmup_epochs=0", "model.sync_batchnorm=true",
    "augment.crop=false", "augment.flip_p=0.0", "augment.color_p=0.0",
    "augment.grayscale_p=0.0",
]


@pytest.fixture(scope="module", params=sorted(VAL_METRICS))
def runs(request, tmp_path_factory):
    """(method, one-process run, two-process run)."""
    method, tmp_path = request.param, tmp_path_factory.mktemp(request.param)
    out = {}
    for processes in (1, 2):
        out_dir = tmp_path / str(processes)
        sslterm("-o", str(out_dir), "run", str(SMOKE), f"model.method={method}", *SAME,
                f"launch.num_processes={processes}", cwd=tmp_path, check=True, timeout=400)
        out[processes] = only_run(out_dir)
    return method, out[1], out[2]


def _weights(run):
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    return load_file(ckpt / "model.safetensors")


def test_a_run_per_method_leaves_a_complete_run_directory(runs):
    method, run, _ = runs
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("finished", 0)
    assert f'method = "{method}"' in (run / "profile.toml").read_text()
    evs = events(run)
    kinds = {e["kind"] for e in evs}
    assert {"run_started", "step", "epoch", "val", "probe", "checkpoint", "run_finished"} <= kinds
    if method in MOMENTUM:  # logged after each step, rising on the cosine towards 1
        momenta = [e["momentum"] for e in evs if e["kind"] == "step"]
        assert len(momenta) == STEPS and momenta == sorted(momenta)
        assert momenta[0] == pytest.approx(0.99) and momenta[-1] == 1.0
    val = next(e for e in evs if e["kind"] == "val")
    for key in ("loss", "knn_top1", *VAL_METRICS[method]):
        assert isinstance(val[key], float | int), key
    final = json.loads((run / "results.json").read_text())["final"]
    assert final["method"] == method
    for key in ("ssl_train_loss", "ssl_val_loss", *(f"ssl_val_{m}" for m in VAL_METRICS[method])):
        assert isinstance(final[key], float | int), key
    assert 0 <= final["linear_eval"]["test_top1"] <= 100
    prefixes = {k.split(".")[0] for k in _weights(run)}
    assert {"encoder", "projector", "predictor"} <= prefixes
    assert ("teacher" in prefixes) == (method in MOMENTUM)


def test_two_processes_train_like_one_per_method(runs):
    _, run1, run2 = runs
    started = next(e for e in events(run2) if e["kind"] == "run_started")
    assert started["world_size"] == 2
    losses1, losses2 = step_losses(run1), step_losses(run2)
    assert len(losses1) == len(losses2) == STEPS
    assert losses1 == pytest.approx(losses2, rel=1e-4, abs=1e-5)
    assert losses1[0] != losses1[-1]  # training moved: the comparison is not vacuous
    params1, params2 = _weights(run1), _weights(run2)
    assert params1.keys() == params2.keys()
    for key in params1:  # the teacher and the BatchNorm statistics included
        assert torch.allclose(params1[key].float(), params2[key].float(), rtol=1e-3,
                              atol=1e-5), key


@pytest.mark.parametrize("runs", ["byol"], indirect=True)
def test_byol_stopped_and_resumed_gives_the_losses_of_an_uninterrupted_run(runs, tmp_path):
    _, whole, _ = runs
    # paced so that `sslterm stop` (a new Python process on a loaded machine) lands mid-epoch
    run = start(tmp_path / "runs", "model.method=byol", *SAME,
                env={"SSLTERM_FAULT_STEP_SLEEP": "4"})
    wait_step(run, 1, 1)
    res = cli(run.parent, "stop", run.name, "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    stopped = next(e for e in reversed(events(run)) if e["kind"] == "run_stopped")
    assert 1 <= stopped["step"] < STEPS  # stopped part-way: the resume has steps left to run
    res = cli(run.parent, "resume", run.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert wait_ended(run) == "finished"
    assert step_losses(run) == pytest.approx(step_losses(whole), rel=1e-5, abs=1e-6)
