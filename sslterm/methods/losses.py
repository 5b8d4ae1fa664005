"""Contrastive losses as pure functions of embeddings (no runs, no files, no Accelerate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def float32(device: torch.device) -> torch.autocast:
    """A region where autocast is off: a float32 cast alone is not enough, since autocast
    would still run the similarity matmul in bf16/fp16 (logits off by ~0.05 at T = 0.1)."""
    return torch.autocast(device_type=device.type, enabled=False)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    *,
    candidates: Tensor | None = None,
    offset: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """NT-Xent (SimCLR) loss of the local pairs ``(z1[i], z2[i])``.

    ``candidates`` are all embeddings that act as negatives, laid out as
    ``[z1_rank0; z2_rank0; z1_rank1; z2_rank1; ...]`` when gathered across
    processes, and ``offset`` is where this process's ``[z1; z2]`` block starts
    in it (``rank * 2 * b``). With one process both default to the local block.
    Returns ``(mean loss, logits [2b, M], positive index [2b])``; similarities
    are computed in float32 whatever the autocast dtype.
    """
    b = z1.shape[0]
    with float32(z1.device):
        queries = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        keys = queries if candidates is None else F.normalize(candidates.float(), dim=1)
        logits = queries @ keys.T / temperature
    rows = torch.arange(2 * b, device=z1.device)
    logits[rows, rows + offset] = float("-inf")  # a view is never its own negative
    positive = torch.cat([rows[b:], rows[:b]]) + offset
    return F.cross_entropy(logits, positive), logits, positive


def contrastive_topk(logits: Tensor, positive: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, Tensor]:
    """Share (%) of views whose positive ranks within the top k of all candidates."""
    rank = (logits > logits.gather(1, positive[:, None])).sum(1)
    return {f"top{k}": (rank < k).float().mean() * 100 for k in ks}


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean negative cosine similarity of predictions ``p`` to targets ``z`` (SimSiam, BYOL).

    The caller passes ``z`` detached (the stop-gradient or the EMA teacher); computed in
    float32 under autocast.
    """
    with float32(p.device):
        return -F.cosine_similarity(p.float(), z.float(), dim=1, eps=1e-8).mean()


def moco_infonce(q: Tensor, k: Tensor, temperature: float, *, keys: Tensor | None = None,
                 offset: int = 0) -> Tensor:
    """MoCo v3's contrastive loss of queries ``q`` against momentum keys, scaled by 2T.

    Query ``i`` is positive with key ``offset + i`` of ``keys`` (all processes' keys, gathered
    without gradient: ``rank * b`` is this process's offset) and negative with the rest.
    Defaults to the local keys ``k``. As in the paper's code, the loss is multiplied by
    ``2 * temperature`` so the gradient scale does not depend on T.
    """
    with float32(q.device):
        q = F.normalize(q.float(), dim=1)
        keys = F.normalize((k if keys is None else keys).float(), dim=1)
        logits = q @ keys.T / temperature
        labels = torch.arange(q.shape[0], device=q.device) + offset
        return F.cross_entropy(logits, labels) * (2 * temperature)


@torch.no_grad()
def view_agreement(z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
    """``cosine``: mean cosine similarity of the two views' embeddings; ``z_std``: the
    per-channel std of the l2-normalised embeddings times sqrt(dim), about 1 for spread-out
    embeddings and 0 at collapse (SimSiam paper, Fig. 2), since a high ``cosine`` alone may
    be a collapse."""
    with float32(z1.device):
        z1, z2 = z1.float(), z2.float()
        cosine = F.cosine_similarity(z1, z2, dim=1).mean()
        std = F.normalize(z1, dim=1).std(0).mean() * z1.shape[1] ** 0.5
    return {"cosine": cosine, "z_std": std}
