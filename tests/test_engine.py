"""The engine drives any method through the interface alone (sslterm/methods/base.py).

The real Trainer in this process on the CPU, with the registered methods on the smoke
profile's tiny encoder; the multi-process paths are in test_distributed.py and the
methods' own numbers in test_methods.py.
"""

from __future__ import annotations

import pytest
import torch
from runhelpers import SMOKE, events

import sslterm.methods  # noqa: F401  (registers the built-in methods)
from sslterm.commands.features import encoder_state
from sslterm.methods.registry import METHODS
from sslterm.profile.load import load_profile
from sslterm.runs.store import RunDir
from sslterm.train.engine import Position, Trainer
from sslterm.train.model import build_model
from sslterm.train.optim import param_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(tmp_path, *overrides: str) -> Trainer:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    t = Trainer(run, load_profile(SMOKE, ["launch.cpu=true", *overrides]))
    t.setup()
    return t


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_online_probe_is_the_engines_for_every_method(method):
    """A linear layer on the eval encoder's features, trained in the one forward, in its own
    optimizer group found by identity; without train.online_probe there is none."""
    profile = load_profile(SMOKE, [f"model.method={method}"])
    built = build_model(profile, 32, 4)
    model = built.model
    assert isinstance(model.online_probe, torch.nn.Linear)
    assert (model.online_probe.in_features, model.online_probe.out_features) == (
        built.feature_dim, 4)
    assert [k for k in model.state_dict() if k.startswith("online_probe.")] == [
        "online_probe.weight", "online_probe.bias"]
    probe_group = next(g for g in param_groups(model, 1e-4, model.online_probe)
                       if g["name"] == "probe")
    assert probe_group["params"] == list(model.online_probe.parameters())
    views = [torch.randn(4, 3, 32, 32) for _ in model.views()]
    out = model(views, torch.tensor([0, 1, 2, 3]))
    assert 0 <= out["probe_correct"].item() <= 4 and out["loss"] > out["ssl_loss"] - 1e-6
    out["loss"].backward()
    assert model.online_probe.weight.grad is not None
    off = load_profile(SMOKE, [f"model.method={method}", "train.online_probe=false"])
    assert build_model(off, 32, 4).model.online_probe is None


def test_after_step_runs_once_per_optimizer_step_and_its_scalars_reach_the_step_events(tmp_path):
    """With accumulation, after_step follows each optimizer step (not each micro-batch), is
    told the step and the total, and what it returns is logged (BYOL's momentum)."""
    t = trainer(tmp_path, "model.method=byol", "train.batch_size=32", "train.accumulate=2",
                "train.max_steps_per_epoch=2", "train.log_every=1")
    calls, original = [], t.method.after_step

    def spy(step: int, total: int) -> dict[str, float]:
        scalars = original(step, total)
        calls.append((step, total, scalars))
        return scalars

    t.method.after_step = spy
    t.open_events()
    t.train_epoch(0, Position())
    t.events.close()
    assert [(step, total) for step, total, _ in calls] == [(0, 6), (1, 6)]
    steps = [e for e in events(t.run.path) if e["kind"] == "step"]
    assert [e["momentum"] for e in steps] == [s["momentum"] for _, _, s in calls]


def test_validation_reports_the_methods_own_metrics_as_image_weighted_means(tmp_path):
    t = trainer(tmp_path)
    method = t.method.eval()
    metrics = t.val_metrics()
    assert sorted(metrics) == ["loss", "top1", "top5"]  # SimCLR's
    n = len(t.splits.val)
    with torch.no_grad():
        scored = [(method.val_metrics(views), len(views[0]))
                  for views in t.val_views(torch.arange(n), t.per_rank)]
    for name, value in metrics.items():
        want = sum(m[name].item() * b for m, b in scored) / sum(b for _, b in scored)
        assert value == pytest.approx(want, rel=1e-5), name


def test_validation_of_another_method_has_that_methods_keys(tmp_path):
    t = trainer(tmp_path, "model.method=simsiam")
    views = next(t.val_views(torch.arange(4), 4))
    with torch.no_grad():
        want = sorted(t.method.eval().val_metrics(views))
    assert sorted(t.val_metrics()) == want and "top1" not in want


def test_export_takes_the_methods_eval_encoder_from_a_checkpoint(tmp_path):
    """The exported weights are what eval_encoder() evaluates (BYOL: the student, not the
    teacher), loaded through the run's own model, not picked by a key prefix."""
    t = trainer(tmp_path, "model.method=byol", "train.max_steps_per_epoch=1")
    t.train_epoch(0, Position())
    path = t.run.path / t.save_checkpoint(Position(1, 0, 1), complete_epoch=True)
    fresh = build_model(t.p, t.size, t.splits.info.num_classes).model
    exported = encoder_state(path, fresh)
    student = t.method.eval_encoder().state_dict()
    assert exported.keys() == student.keys()
    assert all(torch.equal(exported[k], student[k]) for k in student)
