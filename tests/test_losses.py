import math

import torch

from sslterm.methods.losses import byol_loss, contrastive_topk, negative_cosine, nt_xent


def reference_nt_xent(z1, z2, t):
    """Loop over every view: -log(exp(s_pos/t) / sum_{k != i} exp(s_ik/t)), in float64."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        num = math.exp(float(z[i] @ z[j]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(num / den)
    return total / n


def test_nt_xent_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for t in (0.1, 0.5, 1.0):
        loss, logits, pos = nt_xent(z1, z2, t)
        assert math.isclose(loss.item(), reference_nt_xent(z1, z2, t), rel_tol=1e-5)
        assert logits.shape == (12, 12)
        assert pos.tolist() == [*range(6, 12), *range(6)]


def test_nt_xent_with_gathered_candidates_equals_global_loss():
    """Two simulated ranks: the mean of the per-rank losses over the gathered
    candidates equals the loss of one process over the whole batch."""
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    full, _, _ = nt_xent(z1, z2, 0.2)
    b = 4
    blocks = [torch.cat([z1[r * b:(r + 1) * b], z2[r * b:(r + 1) * b]]) for r in range(2)]
    everything = torch.cat(blocks)
    per_rank = [
        nt_xent(z1[r * b:(r + 1) * b], z2[r * b:(r + 1) * b], 0.2,
                candidates=everything, offset=r * 2 * b)[0]
        for r in range(2)
    ]
    assert torch.allclose(sum(per_rank) / 2, full, atol=1e-6)


def test_identical_views_are_easy_and_topk_counts_them():
    z = torch.eye(4)
    loss, logits, pos = nt_xent(z, z.clone(), 0.1)
    assert loss.item() < 1e-3
    acc = contrastive_topk(logits, pos)
    assert acc["top1"].item() == 100.0
    shuffled = torch.roll(z, 1, 0)
    _, logits, pos = nt_xent(z, shuffled, 0.1)
    assert contrastive_topk(logits, pos)["top1"].item() == 0.0


def test_nt_xent_is_float32_under_autocast():
    """bf16 autocast must not reach the similarity matmul (it would round the logits)."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    loss, logits, _ = nt_xent(z1, z2, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, logits_ac, _ = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
        loss_32, logits_32, _ = nt_xent(z1, z2, 0.1)
    assert logits_ac.dtype == logits_32.dtype == torch.float32
    assert torch.equal(logits_32, logits) and torch.equal(loss_32, loss)


def test_byol_loss_is_the_normalised_squared_distance():
    """BYOL's pair loss on solo-learn's scale, 2 - 2 cos: the BYOL paper's mean squared
    distance of the l2-normalised prediction and target, computed here in float64."""
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    ref = ((p.double() / p.double().norm(dim=1, keepdim=True)
            - z.double() / z.double().norm(dim=1, keepdim=True)) ** 2).sum(1).mean()
    torch.testing.assert_close(byol_loss(p, z).double(), ref)
    # the control: lightly's example scale (half a negative cosine per pair) is not it
    assert abs(0.5 * negative_cosine(p, z).item() - ref.item()) > 0.5
    assert byol_loss(p, p).abs().item() < 1e-6
