"""Contrastive losses as pure functions of embeddings (no runs, no files, no Accelerate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
