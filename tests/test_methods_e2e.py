"""BYOL, MoCo v3, SimSiam, DINO, Barlow Twins and VICReg end to end through the real CLI
and `accelerate launch`.

Per method, one run in one process and the same run in two (module-scoped: the runs are
the expensive part), each a smoke run that validates and probes at its end:

- the one-process run leaves a complete run directory, with the method's own scalars (the
  teacher's momentum) in the step events and its val metrics in results.json;
- two processes train like one. Augmentation is off so both see the same views of the same
  global batches; the heads' BatchNorm is over the global batch in both
  (``model.sync_batchnorm``: on CPUs a GlobalBatchNorm, see sslterm/models/norm.py), and
  MoCo v3's keys are gathered from both processes, DINO's center is the mean over both and
  Barlow Twins' and VICReg's batch statistics are over both halves, so losses and weights
  must agree;

Stopping and resuming a momentum method is tests/test_methods_resume.py (a file of its own,
so that pytest-xdist's per-file scheduling runs it beside these runs).
"""

from __future__ import annotations

import json

import pytest
import torch
from faulthelpers import step_losses
from runhelpers import EXACT_METHOD_RUN, METHOD_ENCODER, SMOKE, events, only_run, sslterm
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

MOMENTUM = {"byol": 0.99, "mocov3": 0.99, "dino": 0.996}  # the teacher's first momentum
VAL_METRICS = {"byol": ("cosine", "z_std"), "mocov3": ("top1",), "simsiam": ("cosine", "z_std"),
               "dino": ("teacher_entropy",),
               "barlowtwins": ("on_diag", "off_diag", "cosine", "z_std"),
               "vicreg": ("invariance", "variance", "covariance", "cosine", "z_std")}
# the method's own training scalars in every step event (chartable in the app)
STEP_SCALARS = {"barlowtwins": ("on_diag", "off_diag"),
                "vicreg": ("invariance", "variance", "covariance")}
PARTS = {"dino": {"encoder", "head", "teacher", "center"},
         "barlowtwins": {"encoder", "projector"}, "vicreg": {"encoder", "projector"}}
# A parameter whose exact gradient is zero moves by float noise alone: the ViT's final norm
# bias shifts every feature by a constant that the projector's first BatchNorm removes. The
# noise scales with the loss, and VICReg's (weights 25 / 25 / 1) moves it by ~1e-5.
WEIGHT_ATOL = {"vicreg": 5e-5}
STEPS = 4
SAME = EXACT_METHOD_RUN


@pytest.fixture(scope="module", params=sorted(VAL_METRICS))
def runs(request, tmp_path_factory):
    """(method, one-process run, two-process run)."""
    method, tmp_path = request.param, tmp_path_factory.mktemp(request.param)
    out = {}
    for processes in (1, 2):
        out_dir = tmp_path / str(processes)
        sslterm("-o", str(out_dir), "run", str(SMOKE), f"model.method={method}", *SAME,
                *METHOD_ENCODER.get(method, []), f"launch.num_processes={processes}", cwd=tmp_path,
                check=True, timeout=400)
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
        assert momenta[0] == pytest.approx(MOMENTUM[method]) and momenta[-1] == 1.0
    if method == "dino":  # epoch 0 of smoke.toml's 2-epoch warm-up
        assert [e["teacher_temp"] for e in evs if e["kind"] == "step"] == [0.04] * STEPS
    for key in STEP_SCALARS.get(method, ()):
        assert all(isinstance(e[key], float) for e in evs if e["kind"] == "step"), key
    val = next(e for e in evs if e["kind"] == "val")
    for key in ("loss", "knn_top1", *VAL_METRICS[method]):
        assert isinstance(val[key], float | int), key
    final = json.loads((run / "results.json").read_text())["final"]
    assert final["method"] == method
    for key in ("ssl_train_loss", "ssl_val_loss", *(f"ssl_val_{m}" for m in VAL_METRICS[method])):
        assert isinstance(final[key], float | int), key
    assert 0 <= final["linear_eval"]["test_top1"] <= 100
    prefixes = {k.split(".")[0] for k in _weights(run)}
    assert PARTS.get(method, {"encoder", "projector", "predictor"}) <= prefixes
    assert ("teacher" in prefixes) == (method in MOMENTUM)


def test_two_processes_train_like_one_per_method(runs):
    method, run1, run2 = runs
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
                              atol=WEIGHT_ATOL.get(method, 1e-5)), key
