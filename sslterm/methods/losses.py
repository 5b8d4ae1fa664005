"""Self-supervised losses as pure functions of embeddings (no runs, no files, no Accelerate)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import Tensor

from sslterm.eval.precision import full_fp32


def float32(device: torch.device) -> AbstractContextManager[None]:
    """A region in true float32: a float32 cast alone is not enough, since autocast would
    still run the similarity matmul in bf16/fp16 (logits off by ~0.05 at T = 0.1), and
    TF32 (``train.tf32``) in about 1e-3 (:func:`sslterm.eval.precision.full_fp32`)."""
    return full_fp32(device.type)


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


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's loss of one (prediction, target) pair as the paper and solo-learn
    (``byol_loss_func``): the mean squared distance of the l2-normalised vectors,
    ``2 - 2 cos``. BYOL sums it over both pairs: four times the gradient of lightly's
    example (half the sum of the negative cosines), which the recipes' lr assumes."""
    return 2 + 2 * negative_cosine(p, z)


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


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, flattened (Barlow Twins' and VICReg's code)."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambda_offdiag: float,
                      scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Barlow Twins: ``(loss, on_diag, off_diag)`` of the cross-correlation ``c`` of the two
    views' embeddings, each standardised per dimension over the batch.

    ``on_diag = sum_i (1 - c_ii)^2`` pulls the views together, ``off_diag = sum_{i!=j} c_ij^2``
    decorrelates the dimensions; ``loss = scale * (on_diag + lambda_offdiag * off_diag)``
    (``scale`` is solo-learn's ``scale_loss``). The standardisation is BatchNorm's (biased
    variance, eps 1e-5) as in the paper's code and lightly, so the batch must be the whole
    batch: a multi-process caller gathers the embeddings first. Float32 under autocast.
    """
    with float32(z1.device):
        a = F.batch_norm(z1.float(), None, None, training=True)
        b = F.batch_norm(z2.float(), None, None, training=True)
        c = a.T @ b / a.shape[0]
        on_diag = (1 - c.diagonal()).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
    return scale * (on_diag + lambda_offdiag * off_diag), on_diag, off_diag


def vicreg_terms(z1: Tensor, z2: Tensor, eps: float = 1e-4,
                 variance_sum: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """VICReg's unweighted ``(invariance, variance, covariance)`` terms, as its paper's code.

    Invariance: mean squared distance of the two views' embeddings. Variance: per view, the
    mean hinge ``relu(1 - std)`` of each dimension's std over the batch, averaged over the
    views (summed with ``variance_sum``, as solo-learn's ``variance_loss``). Covariance: per view, the squared off-diagonal covariances over the batch summed
    and divided by the dimension, summed over the views. The last two are batch statistics:
    a multi-process caller gathers the embeddings first. Float32 under autocast.
    """
    with float32(z1.device):
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)
        variance = (_std_hinge(z1, eps) + _std_hinge(z2, eps)) * (1.0 if variance_sum else 0.5)
        covariance = _offdiag_covariance(z1) + _offdiag_covariance(z2)
    return invariance, variance, covariance


def _std_hinge(z: Tensor, eps: float) -> Tensor:
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _offdiag_covariance(z: Tensor) -> Tensor:
    z = z - z.mean(dim=0)
    cov = z.T @ z / (z.shape[0] - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


def vicreg_loss(z1: Tensor, z2: Tensor, invariance_weight: float = 25.0,
                variance_weight: float = 25.0, covariance_weight: float = 1.0,
                eps: float = 1e-4, variance_sum: bool = False,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """VICReg: ``(loss, invariance, variance, covariance)``, the loss the weighted sum of the
    three terms of ``vicreg_terms`` (paper defaults 25 / 25 / 1)."""
    invariance, variance, covariance = vicreg_terms(z1, z2, eps, variance_sum)
    loss = (invariance_weight * invariance + variance_weight * variance
            + covariance_weight * covariance)
    return loss, invariance, variance, covariance


def dino_loss(teacher_out: list[Tensor], student_out: list[Tensor], center: Tensor,
              teacher_temp: float, student_temp: float) -> Tensor:
    """DINO: cross-entropy of the teacher's centred, sharpened distribution of each view
    ``i`` against the student's distribution of every other view ``j != i``.

    ``teacher_out`` holds the teacher's head outputs of the global views, ``student_out`` the
    student's of all views, the same global views first in the same order (so pair ``(i, i)``
    is a view with itself and is skipped). The mean is over pairs and images, as lightly's
    ``DINOLoss`` and the paper's code. No gradient reaches the teacher's side; float32
    under autocast (a softmax at T = 0.04 over thousands of prototypes).
    """
    with float32(student_out[0].device):
        with torch.no_grad():
            t = F.softmax((torch.stack(teacher_out).float() - center) / teacher_temp, dim=-1)
        s = F.log_softmax(torch.stack(student_out).float() / student_temp, dim=-1)
        ce = -torch.einsum("tbd,sbd->ts", t, s)
    # counted on the host and masked by multiplication: no device-to-host sync in the step
    pairs = len(teacher_out) * len(student_out) - min(len(teacher_out), len(student_out))
    if pairs == 0:
        raise ValueError("DINO's loss needs at least two views (a view is never its own target)")
    other = ~torch.eye(len(teacher_out), len(student_out), dtype=torch.bool, device=ce.device)
    return torch.where(other, ce, 0.0).sum() / (pairs * t.shape[1])


@torch.no_grad()
def dino_center(center: Tensor, teacher_out: list[Tensor], momentum: float) -> Tensor:
    """DINO's next center: ``momentum * center + (1 - momentum) * batch mean``, the mean of
    the teacher outputs over all views and the GLOBAL batch (an all-reduce over processes
    when there are several, as the paper's code and lightly), so every process keeps the
    same center as one process on the whole batch would."""
    batch_center = torch.stack(teacher_out).float().mean(dim=(0, 1))
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(batch_center)
        batch_center /= dist.get_world_size()
    return center * momentum + batch_center * (1 - momentum)


@torch.no_grad()
def dino_teacher_entropy(teacher_out: list[Tensor], center: Tensor, teacher_temp: float) -> Tensor:
    """Mean entropy of the teacher's per-image distribution over the prototypes, as a share
    of its maximum ``log K``: near 1 when the teacher collapsed to the uniform distribution,
    near 0 when it is one-hot (DINO's other collapse, if one prototype wins for every image)."""
    with float32(teacher_out[0].device):
        logp = F.log_softmax((torch.stack(teacher_out).float() - center) / teacher_temp, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
    return entropy / math.log(logp.shape[-1])
