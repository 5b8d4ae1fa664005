"""The engine drives any method through the interface alone (sslterm/methods/base.py).

The real Trainer in this process on the CPU, with the registered methods on the smoke
profile's tiny encoder; the multi-process paths are in test_distributed.py and the
methods' own numbers in test_methods.py.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from runhelpers import SMOKE, events

import sslterm.methods  # noqa: F401  (registers the built-in methods)
from sslterm.commands.features import encoder_state
from sslterm.methods.registry import METHODS
from sslterm.profile.load import load_profile
from sslterm.runs.store import RunDir
from sslterm.train.engine import Position, Trainer
from sslterm.train.evaluation import eval_rows
from sslterm.train.model import build_model
from sslterm.train.optim import param_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(tmp_path, *overrides: str) -> Trainer:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(parents=True)
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


class ValViews:
    """Wraps a trainer's ``val_views``: the held-out rows asked for, and the peak bytes of the
    views alive (weak references: what is still held anywhere) as each new batch is made."""

    def __init__(self, t: Trainer) -> None:
        self.real, self.rows, self.live, self.peak = t.batches.val_views, [], [], 0
        t.batches.val_views = self

    def __call__(self, idx: torch.Tensor, batch_size: int):
        self.rows.append(idx)
        for views in self.real(idx, batch_size):
            self.live += [weakref.ref(v) for v in views]
            alive = [v for v in (ref() for ref in self.live) if v is not None]
            self.peak = max(self.peak, sum(v.nbytes for v in alive))
            del alive
            yield views
            del views


def test_validation_holds_one_batch_of_views_however_large_the_held_out_split(tmp_path):
    """Issue 21 item 4: scored batch by batch with running sums, not all views first (which
    held 19 GB per GPU on ImageNet)."""
    peaks = []
    for fraction in (0.25, 0.75):  # 128 and 384 held-out images: 2 and 6 batches of 64
        t = trainer(tmp_path / str(fraction), "data.synthetic_size=512",
                    f"data.val_fraction={fraction}")
        spy = ValViews(t)
        t.method.eval()
        assert sorted(t.val_metrics()) == ["loss", "top1", "top5"]
        assert len(spy.live) == 2 * len(t.splits.val) // 64  # the whole split was scored
        peaks.append(spy.peak)
    print(f"peak bytes of live views, 128 and 384 held-out images: {peaks}")  # RESULTS.md
    assert peaks[0] == peaks[1] == 2 * 64 * 3 * 32 * 32 * 4  # two float32 views of 64 images


def test_validation_scores_a_fixed_random_subset_of_at_most_val_max_images(tmp_path):
    t = trainer(tmp_path, "probe.val_max_images=10")
    spy = ValViews(t)
    method = t.method.eval()
    metrics = t.val_metrics()
    n = len(t.splits.val)
    rows = eval_rows(n, 10, t.p.train.seed + 1)  # the kNN queries' subset when capped alike
    assert n > 20 and len(spy.rows) == 1 and torch.equal(spy.rows[0], rows)
    with torch.no_grad():
        (views,) = list(t.batches.val_views.real(rows, t.per_rank))
        want = method.val_metrics(views)
    assert metrics == pytest.approx({k: v.item() for k, v in want.items()}, rel=1e-5)


def test_per_sample_validation_draws_in_workers_the_same_views_as_without(tmp_path):
    """The per-sample path draws in data.num_workers workers; each image's views are fixed by
    (seed, its index), so neither the workers nor the batches change them."""
    t = trainer(tmp_path, "data.augment=cpu")
    idx = torch.tensor([3, 5, 7, 9])
    (alone,) = list(t.val_views(idx, 4))
    t.p.data.num_workers = 2
    pairs = list(t.val_views(idx, 2))
    for view, (first, second) in zip(alone, zip(*pairs, strict=True), strict=True):
        assert torch.equal(view, torch.cat([first, second]))
    (again,) = list(t.val_views(idx[1:3], 2))
    assert all(torch.equal(v[1:3], w) for v, w in zip(alone, again, strict=True))
    assert not torch.equal(alone[0][0], alone[1][0])  # two different views of an image
    t.method.eval()
    with_workers = t.val_metrics()
    t.p.data.num_workers = 0
    assert t.val_metrics() == pytest.approx(with_workers, rel=1e-6)


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


def test_simsiams_predictor_keeps_the_peak_lr_through_warmup_and_decay(tmp_path):
    """simsiam.predictor_fixed_lr: the predictor's own groups stay at the peak lr while the
    rest follows the warmup and cosine; off, the predictor follows the schedule too."""
    t = trainer(tmp_path, "model.method=simsiam", "train.optimizer=sgd", "train.epochs=2",
                "train.warmup_epochs=1", "train.max_steps_per_epoch=2", "train.log_every=1")
    predictor = {id(p) for p in t.method.predictor.parameters()}
    groups = {g["name"]: g for g in t.opt.param_groups}
    assert {id(p) for n in ("fixed_lr_decay", "fixed_lr_no_decay")
            for p in groups[n]["params"]} == predictor
    seen, step = [], t.opt.step

    def recording_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append({n: g["lr"] for n, g in groups.items()})
        return step(*args, **kwargs)

    t.opt.step = recording_step
    t.open_events()
    for epoch in range(2):
        t.train_epoch(epoch, Position(epoch=epoch, global_step=2 * epoch))
    t.events.close()
    scheduled = [s["decay"] for s in seen]
    assert scheduled == [t.peak_lr / 2, t.peak_lr, t.peak_lr, t.peak_lr / 2]  # warmup, cosine
    assert all(s["fixed_lr_decay"] == s["fixed_lr_no_decay"] == t.peak_lr for s in seen)
    off = trainer(tmp_path / "off", "model.method=simsiam", "simsiam.predictor_fixed_lr=false")
    assert not any(g.get("fixed_lr") for g in off.opt.param_groups)


@pytest.mark.parametrize("mode", ["global", "per_tensor"])
def test_grad_clip_bounds_what_the_optimizer_steps_with(tmp_path, mode):
    """train.grad_clip: every optimizer step sees gradients within the threshold (global:
    their joint norm; per_tensor: each tensor's)."""
    t = trainer(tmp_path, "train.max_steps_per_epoch=2", "train.grad_clip=0.01",
                f"train.grad_clip_mode={mode}")
    norms, step = [], t.opt.step

    def recording_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        grads = [p.grad.flatten() for g in t.opt.param_groups for p in g["params"]
                 if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.cat(grads)).item() if mode == "global"
                     else max(torch.linalg.vector_norm(g).item() for g in grads))
        return step(*args, **kwargs)

    t.opt.step = recording_step
    t.open_events()
    t.train_epoch(0, Position())
    t.events.close()
    assert len(norms) == 2 and max(norms) <= 0.01 * (1 + 1e-4)
    assert max(norms) > 0.001  # clipped to the threshold, not to nothing


def test_val_fraction_zero_trains_on_everything_and_monitors_on_the_test_split(tmp_path):
    """solo-learn's protocol: all training images train; SSL validation, the kNN monitor and
    the linear probe's held-out scores use the test split (no 'val' duplicate of it)."""
    t = trainer(tmp_path, "data.val_fraction=0", "train.max_steps_per_epoch=1",
                "probe.epochs=1")
    full = trainer(tmp_path / "split", "train.max_steps_per_epoch=1")
    assert len(t.splits.train) == len(full.splits.train) + len(full.splits.val)
    assert t.splits.val is t.splits.test and t.splits.val_is_test
    t.open_events()
    t.validate(0, Position())
    probe = t.linear_probe(0, Position())
    t.events.close()
    assert "knn_top1" in t.history.val[-1] and "loss" in t.history.val[-1]
    assert any(k.startswith("test_") for k in probe) and not any(k.startswith("val_") for k in probe)
