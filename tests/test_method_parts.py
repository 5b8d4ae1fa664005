"""Heads, losses and momentum updates of BYOL, SimSiam and MoCo v3 against lightly's own
implementations on the same inputs: values and gradients, to float tolerance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslterm.methods.losses import moco_infonce, negative_cosine
from sslterm.methods.momentum import cosine_schedule, update_momentum
from sslterm.models import heads

lightly_heads = pytest.importorskip("lightly.models.modules.heads")
from lightly.loss import NegativeCosineSimilarity  # noqa: E402
from lightly.models.utils import update_momentum as lightly_update_momentum  # noqa: E402
from lightly.utils.scheduler import cosine_schedule as lightly_cosine_schedule  # noqa: E402


def _same_function(ours: nn.Module, theirs: nn.Module, in_dim: int) -> None:
    """Copy our parameters into lightly's head (theirs has the same layout), then compare
    outputs, input gradients and parameter gradients in train mode (batch statistics)."""
    ours_sd = ours.state_dict()
    theirs_sd = theirs.state_dict()
    assert len(ours_sd) == len(theirs_sd)
    for (k1, v1), (k2, v2) in zip(ours_sd.items(), theirs_sd.items(), strict=True):
        assert v1.shape == v2.shape, (k1, k2)
    theirs.load_state_dict(dict(zip(theirs_sd, ours_sd.values(), strict=True)))
    x = torch.randn(16, in_dim, generator=torch.Generator().manual_seed(3))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours.train()(xa), theirs.train()(xb)
    torch.testing.assert_close(ya, yb)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for pa, pb in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: heads.byol_head(32, 48, 16), lambda: lightly_heads.BYOLProjectionHead(32, 48, 16)),
        (lambda: heads.byol_head(16, 48, 16), lambda: lightly_heads.BYOLPredictionHead(16, 48, 16)),
        (lambda: heads.simsiam_projector(32, 48, 24),
         lambda: lightly_heads.SimSiamProjectionHead(32, 48, 24)),
        (lambda: heads.simsiam_predictor(24, 8, 24),
         lambda: lightly_heads.SimSiamPredictionHead(24, 8, 24)),
        (lambda: heads.mocov3_predictor(16, 48, 16),
         lambda: lightly_heads.BYOLPredictionHead(16, 48, 16)),
        # solo-learn's SimCLR head: Linear-BN-ReLU-Linear, lightly's BYOL head's shape (lightly's
        # own SimCLR head adds an output BatchNorm)
        (lambda: heads.projector("mlp_bn", 32, 48, 16),
         lambda: lightly_heads.BYOLProjectionHead(32, 48, 16)),
    ],
    ids=["byol-projector", "byol-predictor", "simsiam-projector", "simsiam-predictor",
         "mocov3-predictor", "simclr-mlp_bn-projector"],
)
def test_heads_equal_lightly(ours, theirs):
    torch.manual_seed(0)
    a, b = ours(), theirs()
    _same_function(a, b, a[0].in_features)


@pytest.mark.parametrize("layers", [2, 3])
def test_mocov3_projector_equals_lightly_with_a_frozen_output_norm(layers):
    """lightly's MoCo head gives its output BatchNorm affine parameters; MoCo v3's code does
    not. At their initial values (1, 0) the two compute the same function."""
    torch.manual_seed(0)
    ours = heads.mocov3_projector(32, 48, 16, layers=layers)
    theirs = lightly_heads.MoCoProjectionHead(32, 48, 16, num_layers=layers, batch_norm=True)
    out_norm = theirs.layers[-1]
    assert isinstance(out_norm, nn.BatchNorm1d) and out_norm.affine
    assert not ours[-1].affine
    sd = {k: v for k, v in theirs.state_dict().items()
          if not k.startswith(f"layers.{len(theirs.layers) - 1}.") or "running" in k
          or "num_batches" in k}
    assert len(sd) == len(ours.state_dict())
    theirs.load_state_dict({**theirs.state_dict(),
                            **dict(zip(sd, ours.state_dict().values(), strict=True))})
    x = torch.randn(16, 32)
    torch.testing.assert_close(ours.train()(x), theirs.train()(x))


def test_negative_cosine_equals_lightly_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    pa, pb = p.clone().requires_grad_(), p.clone().requires_grad_()
    ours, theirs = negative_cosine(pa, z), NegativeCosineSimilarity()(pb, z)
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(pa.grad, pb.grad)


def test_negative_cosine_is_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(64, 256, generator=g), torch.randn(64, 256, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = negative_cosine(p, z)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, negative_cosine(p, z))


def _loop_moco(q, keys, t, offset):
    """-log softmax of each query's positive key, over every key, in float64, times 2T."""
    q = q.double() / q.double().norm(dim=1, keepdim=True)
    k = keys.double() / keys.double().norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(q.shape[0]):
        sims = [float(q[i] @ k[j]) / t for j in range(k.shape[0])]
        total += -(sims[offset + i] - math.log(sum(math.exp(s) for s in sims)))
    return total / q.shape[0] * 2 * t


def test_moco_infonce_matches_loop_reference_and_gathered_keys_equal_one_process():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    for t in (0.2, 1.0):
        assert math.isclose(moco_infonce(q, k, t).item(), _loop_moco(q, k, t, 0), rel_tol=1e-5)
    # two simulated processes of 4 queries each, against all 8 keys: the same loss as one
    full = moco_infonce(q, k, 0.2)
    per_rank = [moco_infonce(q[r * 4:(r + 1) * 4], k[r * 4:(r + 1) * 4], 0.2, keys=k,
                             offset=r * 4) for r in range(2)]
    torch.testing.assert_close(sum(per_rank) / 2, full)


def test_moco_infonce_gradient_flows_to_queries_only():
    q = torch.randn(4, 6, requires_grad=True)
    k = torch.randn(4, 6, requires_grad=True)
    moco_infonce(q, k.detach(), 0.2).backward()
    assert q.grad is not None and k.grad is None


def test_update_momentum_equals_lightly():
    torch.manual_seed(0)
    student = heads.byol_head(8, 16, 4)
    teacher_a, teacher_b = heads.byol_head(8, 16, 4), heads.byol_head(8, 16, 4)
    teacher_b.load_state_dict(teacher_a.state_dict())
    update_momentum(student, teacher_a, 0.99)
    lightly_update_momentum(student, teacher_b, 0.99)
    for a, b in zip(teacher_a.state_dict().values(), teacher_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(teacher_a[0].weight, student[0].weight)


@pytest.mark.parametrize("total", [1, 2, 10, 977])
def test_cosine_schedule_equals_lightly(total):
    for step in sorted({0, 1, total // 3, total // 2, max(total - 2, 0), total - 1, total}):
        ours = cosine_schedule(step, total, 0.99, 1.0)
        assert ours == pytest.approx(lightly_cosine_schedule(step, total, 0.99, 1.0), abs=1e-12)
    assert cosine_schedule(0, total, 0.99, 1.0) == (0.99 if total > 1 else 1.0)
