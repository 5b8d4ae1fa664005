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
  must agree, up to the float32 rounding of sums taken in another order (measured, see
  :func:`reorder_error`);

Stopping and resuming a momentum method is tests/test_methods_resume.py (a file of its own,
so that pytest-xdist's per-file scheduling runs it beside these runs).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from faulthelpers import step_losses
from runhelpers import EXACT_METHOD_RUN, METHOD_ENCODER, SMOKE, events, only_run, sslterm
from safetensors.torch import load_file

from sslterm.data.registry import build_splits
from sslterm.data.sampler import ShardedBatches
from sslterm.profile.load import load_profile
from sslterm.train.batches import Batches
from sslterm.train.model import build_model
from sslterm.train.optim import lars_update

pytestmark = pytest.mark.slow

MOMENTUM = {"byol": 0.99, "mocov3": 0.99, "dino": 0.996}  # the teacher's first momentum
VAL_METRICS = {"byol": ("cosine", "z_std"), "mocov3": ("top1",), "simsiam": ("cosine", "z_std"),
               "dino": ("teacher_entropy", "kl"),
               "barlowtwins": ("on_diag", "off_diag", "cosine", "z_std"),
               "vicreg": ("invariance", "variance", "covariance", "cosine", "z_std")}
# the method's own training scalars in every step event (chartable in the app)
STEP_SCALARS = {"barlowtwins": ("on_diag", "off_diag"),
                "vicreg": ("invariance", "variance", "covariance")}
PARTS = {"dino": {"encoder", "head", "teacher", "center"},
         "barlowtwins": {"encoder", "projector"}, "vicreg": {"encoder", "projector"}}
STEPS = 4
# Two runs' weights agree within the largest of: RTOL of the tensor's largest value (the
# rounding error of a sum is relative to its terms, not to the sum, so an element near 0 gets
# no tighter bound than its tensor), ATOL, and the rounding error that reorder_error measures.
RTOL, ATOL, REORDERINGS = 1e-3, 1e-5, 4
SAME = EXACT_METHOD_RUN
# BYOL's loss is solo-learn's, four times lightly's example: at the shared lr its biases (no
# LARS adaptation) step 4x as far, and rounding grows past what the reorder bound carries
# linearly. A quarter of the lr keeps the steps the test was sized for.
METHOD_LR = {"byol": ["train.base_lr=0.075"]}


@pytest.fixture(scope="module", params=sorted(VAL_METRICS))
def runs(request, tmp_path_factory):
    """(method, one-process run, two-process run)."""
    method, tmp_path = request.param, tmp_path_factory.mktemp(request.param)
    out = {}
    for processes in (1, 2):
        out_dir = tmp_path / str(processes)
        sslterm("-o", str(out_dir), "run", str(SMOKE), f"model.method={method}", *SAME,
                *METHOD_ENCODER.get(method, []), *METHOD_LR.get(method, []),
                f"launch.num_processes={processes}", cwd=tmp_path,
                check=True, timeout=400)
        out[processes] = only_run(out_dir)
    return method, out[1], out[2]


def _weights(run):
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    return load_file(ckpt / "model.safetensors")


def reorder_error(run: Path) -> dict[str, float]:
    """Per tensor, how far float32 rounding alone may set two runs' weights apart, measured
    on the run's own model, views and schedule. Two processes sum over the batch in another
    order (BatchNorm statistics, the loss's batch terms, each gradient): mathematically the
    same, as is the same batch permuted, which this measures instead. The largest change of
    the step's update direction (LARS, as the run's optimizer takes it) over REORDERINGS
    permutations, at the starting and at the final weights, is carried through SGD momentum
    at the run's logged learning rates, once for each run.

    It decides where the exact gradient is zero and weights move by rounding alone: the ViT's
    final norm bias shifts every feature by a constant that the projector's first BatchNorm
    removes, and VICReg's large loss (weights 25 / 25 / 1) moves it by ~2e-5, as much as the
    fixed atol of 5e-5 this test once had. This measures ~7e-4 there; the two-process runs
    stay ~30x below it (a permutation reorders every sum, a second process only halves)."""
    p = load_profile(run / "profile.toml")
    t = p.train
    torch.manual_seed(t.seed)
    splits = build_splits(p.data, t.seed)
    size = p.data.image_size or splits.info.image_size
    model = build_model(p, size, splits.info.num_classes, pretrained_weights=False).model
    sampler = ShardedBatches(len(splits.train), t.batch_size, 0, 1, t.seed)
    batches = Batches(p, splits, size, model.views(), sampler, torch.device("cpu"), 0,
                      contextlib.nullcontext)
    views, labels = next(batches.epoch(0, 0, 1))
    probe_labels = model.online_probe is not None

    def direction(state: dict[str, torch.Tensor], order: torch.Tensor) -> dict[str, torch.Tensor]:
        model.load_state_dict(state)  # DINO's forward moves its center: each starts alike
        model.zero_grad()
        model([v[order] for v in views], labels[order] if probe_labels else None)["loss"].backward()
        return {n: lars_update(w, w.grad, t.weight_decay, t.lars_trust_coefficient, 1e-8, False)
                for n, w in model.named_parameters() if w.grad is not None}

    spread: dict[str, float] = {}
    model.train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for state in (start, _weights(run)):
        base = direction(state, torch.arange(len(labels)))
        for _ in range(REORDERINGS):
            other = direction(state, torch.randperm(len(labels), generator=generator))
            for name, u in base.items():
                spread[name] = max(spread.get(name, 0.0), (u - other[name]).abs().max().item())
    lrs = [e["lr"] for e in events(run) if e["kind"] == "step"]
    # step i's error stays in the momentum buffer: moved by lr_j * momentum**(j - i), j >= i
    gain = sum(lr * sum(t.momentum ** k for k in range(i + 1)) for i, lr in enumerate(lrs))
    return {name: 2 * gain * err for name, err in spread.items()}  # two runs, each its own


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


@pytest.mark.usefixtures("one_thread")
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
    rounding = reorder_error(run1)
    for key in params1:  # the teacher (an average of the student) and BatchNorm statistics too
        a, b = params1[key].double(), params2[key].double()
        atol = max(ATOL, RTOL * a.abs().max().item(),
                   rounding.get(key, rounding.get(key.removeprefix("teacher."), 0.0)))
        assert torch.allclose(a, b, rtol=0, atol=atol), (key, (a - b).abs().max().item(), atol)
