"""Linear probe: learns what is learnable, not what is not, with the original lr rule."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from sslterm.eval.export import save_features
from sslterm.eval.knn import NonFiniteError
from sslterm.eval.linear import probe_lr, train_linear_probe
from sslterm.eval.offline import probe_features
from sslterm.profile.schema import ProbeConfig

pytestmark = pytest.mark.usefixtures("one_thread")


SGD = {"weight_decay": 0.0, "momentum": 0.9}


def clusters(n, num_classes=4, dim=16, seed=0):
    """Linearly separable: class means far apart compared to the noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return means[labels] + 0.5 * torch.randn(n, dim, generator=g), labels


def test_separable_features_reach_100_percent():
    result = train_linear_probe(
        clusters(400),
        4,
        epochs=30,
        batch_size=64,
        base_lr=0.1,
        **SGD,
        evaluate={"val": clusters(200, seed=1), "test": clusters(200, seed=2)},
    )
    assert list(result.metrics) == ["train", "val", "test"]
    for split in ("train", "val", "test"):
        assert result.metrics[split]["top1"] >= 99.0
        assert result.metrics[split]["top5"] == 100.0
    assert result.weight.shape == (4, 16) and result.bias.shape == (4,)
    assert result.losses[-1] < 0.05 < result.losses[0]


def test_random_labels_stay_near_chance_on_held_out_data():
    g = torch.Generator().manual_seed(5)
    train = (torch.randn(600, 32, generator=g), torch.randint(0, 10, (600,), generator=g))
    test = (torch.randn(1000, 32, generator=g), torch.randint(0, 10, (1000,), generator=g))
    result = train_linear_probe(
        train, 10, epochs=20, batch_size=64, base_lr=0.1, **SGD, evaluate={"test": test}
    )
    assert 5.0 < result.metrics["test"]["top1"] < 16.0  # chance 10%, std ~1%
    assert result.metrics["train"]["top1"] > result.metrics["test"]["top1"] + 10  # memorised


def test_lr_is_scaled_by_batch_over_256_and_decays_by_cosine_per_step():
    assert probe_lr(0, 100, 0.1, 4096) == pytest.approx(1.6)
    assert probe_lr(50, 100, 0.1, 4096) == pytest.approx(0.8)
    lrs = [probe_lr(s, 100, 0.1, 512) for s in range(100)]
    assert all(a > b for a, b in zip(lrs[:-1], lrs[1:], strict=True)) and lrs[-1] > 0


def test_first_step_uses_the_scaled_lr():
    # One full-batch step from the zero init: W = -lr * dL/dW with lr = base_lr * N / 256.
    x, y = clusters(64)
    result = train_linear_probe((x, y), 4, epochs=1, batch_size=64, base_lr=0.5, **SGD)
    w = torch.zeros(4, 16, requires_grad=True)
    F.cross_entropy(x @ w.T, y).backward()
    torch.testing.assert_close(result.weight, -0.5 * 64 / 256 * w.grad)


def test_update_equals_torch_sgd_with_momentum_and_weight_decay():
    x, y = clusters(96)
    result = train_linear_probe(
        (x, y), 4, epochs=3, batch_size=32, base_lr=0.2, weight_decay=0.01, momentum=0.9, seed=7
    )
    w = torch.zeros(4, 16, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=0.0, momentum=0.9, weight_decay=0.01)
    g, step = torch.Generator().manual_seed(7), 0
    for _ in range(3):
        order = torch.randperm(96, generator=g)
        for start in range(0, 96, 32):
            idx = order[start : start + 32]
            opt.param_groups[0]["lr"] = probe_lr(step, 9, 0.2, 32)
            opt.zero_grad()
            F.cross_entropy(x[idx] @ w.T + b, y[idx]).backward()
            opt.step()
            step += 1
    torch.testing.assert_close(result.weight, w.detach())
    torch.testing.assert_close(result.bias, b.detach())


def test_same_seed_same_result_and_global_state_untouched():
    torch.set_num_threads(2)  # the step loop runs on one CPU thread, then restores this
    state = torch.get_rng_state()
    runs = [
        train_linear_probe(clusters(100), 4, epochs=3, batch_size=16, base_lr=0.1, **SGD)
        for _ in range(2)
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert torch.equal(runs[0].weight, runs[1].weight)
    assert torch.equal(torch.get_rng_state(), state)
    assert threads == 2


def test_trains_inside_inference_mode_and_reports_each_epoch():
    seen = []
    with torch.inference_mode():
        features, labels = clusters(100)  # inference tensors, as extraction might give
    with torch.no_grad():
        result = train_linear_probe(
            (features, labels),
            4,
            epochs=4,
            batch_size=32,
            base_lr=0.1,
            **SGD,
            on_epoch=lambda epoch, loss: seen.append((epoch, loss)),
        )
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert [loss for _, loss in seen] == result.losses
    assert result.metrics["train"]["top1"] > 90


def test_divergence_raises_instead_of_reporting_nan():
    x, y = clusters(256)
    with pytest.raises(NonFiniteError, match="base_lr"):
        train_linear_probe((x * 1e18, y), 4, epochs=5, batch_size=256, base_lr=1e6, **SGD)


def test_nan_features_are_rejected():
    x, y = clusters(32)
    x[3, 2] = math.nan
    with pytest.raises(NonFiniteError, match="train features"):
        train_linear_probe((x, y), 4, epochs=1, batch_size=8, base_lr=0.1, **SGD)
    with pytest.raises(NonFiniteError, match="val features"):
        train_linear_probe(
            clusters(32), 4, epochs=1, batch_size=8, base_lr=0.1, **SGD, evaluate={"val": (x, y)}
        )


def test_results_are_finite_percentages():
    result = train_linear_probe(
        clusters(50), 4, epochs=2, batch_size=7, base_lr=0.1, **SGD, evaluate={"val": clusters(9)}
    )
    for metrics in result.metrics.values():
        for value in metrics.values():
            assert math.isfinite(value) and 0.0 <= value <= 100.0


def test_probe_features_trains_and_runs_knn_from_an_export_alone(tmp_path):
    splits = {"train": clusters(300), "val": clusters(80, seed=1), "test": clusters(90, seed=2)}
    meta = {"dataset": "synthetic", "encoder": "resnet18", "checkpoint": "epoch-10", "run": "r1"}
    save_features(tmp_path / "features", splits, meta)
    cfg = ProbeConfig(epochs=20, batch_size=64, knn_k=10)
    results = probe_features(tmp_path / "features", cfg, seed=3)

    assert results["source"]["checkpoint"] == "epoch-10"
    assert results["source"]["splits"] == {"train": 300, "val": 80, "test": 90}
    linear, knn = results["linear"], results["knn"]
    assert linear["protocol"] == "offline linear eval" and linear["lr"] == pytest.approx(0.025)
    assert set(knn) == {"protocol", "k", "temperature", "val", "test"}  # no train queries
    for split in ("val", "test"):
        assert linear[split]["top1"] >= 99.0 and knn[split]["top1"] >= 99.0
    json.dumps(results, allow_nan=False)  # results.json-ready: plain types, no NaN

    without_knn = probe_features(tmp_path / "features", cfg.model_copy(update={"knn": False}))
    assert "knn" not in without_knn
