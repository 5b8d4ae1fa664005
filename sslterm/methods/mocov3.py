"""MoCo v3 (ResNet variant): BatchNorm projector and predictor on the query encoder, a
momentum key encoder, and InfoNCE of the queries against the keys of every process.

As in the paper's code (facebookresearch/moco-v3): each view goes through both encoders
separately, the loss is ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr`` scaled by 2T, and the keys
are gathered from all processes without gradient, so with N processes each query has the
global batch's keys as negatives (the same loss as one process on the whole batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslterm.methods.base import Method
from sslterm.methods.gather import all_gather_with_grad, rank_and_world
from sslterm.methods.losses import float32, moco_infonce
from sslterm.methods.momentum import Teacher
from sslterm.methods.registry import register_method
from sslterm.models.heads import mocov3_predictor, mocov3_projector

if TYPE_CHECKING:
    from sslterm.profile.schema import MoCoV3Config


@register_method("mocov3")
class MoCoV3(Method):
    shape_keys = ("projector_hidden_dim", "projector_dim", "projector_layers",
                  "predictor_hidden_dim")

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module,
                 temperature: float, momentum_start: float, momentum_end: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor
        self.teacher = Teacher(encoder, projector)
        self.temperature = temperature
        self.momentum_start, self.momentum_end = momentum_start, momentum_end

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: MoCoV3Config) -> MoCoV3:
        c = config
        return cls(
            encoder,
            mocov3_projector(feature_dim, c.projector_hidden_dim, c.projector_dim,
                             layers=c.projector_layers),
            mocov3_predictor(c.projector_dim, c.predictor_hidden_dim, c.projector_dim),
            c.temperature, c.momentum_start, c.momentum_end,
        )

    def _queries_and_keys(self, views: list[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        hs = [self.encoder(x) for x in views[:2]]
        qs = [self.predictor(self.projector(h)) for h in hs]
        ks = [self.teacher(x) for x in views[:2]]
        return hs[0], qs, ks

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        h1, (q1, q2), (k1, k2) = self._queries_and_keys(views)
        rank, _ = rank_and_world()
        offset = rank * q1.shape[0]
        with torch.no_grad():  # keys carry no gradient: the gather is a plain all_gather
            all_k1, all_k2 = all_gather_with_grad(k1), all_gather_with_grad(k2)
        loss = (moco_infonce(q1, k2, self.temperature, keys=all_k2, offset=offset)
                + moco_infonce(q2, k1, self.temperature, keys=all_k1, offset=offset))
        return {"loss": loss, "features": h1}

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        _, (q1, q2), (k1, k2) = self._queries_and_keys(views)
        loss = moco_infonce(q1, k2, self.temperature) + moco_infonce(q2, k1, self.temperature)
        return {"loss": loss.detach(), "top1": (key_top1(q1, k2) + key_top1(q2, k1)) / 2}

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return self.teacher.follow(self.encoder, self.projector, step, total_steps,
                                   self.momentum_start, self.momentum_end)


@torch.no_grad()
def key_top1(q: Tensor, k: Tensor) -> Tensor:
    """Share (%) of queries whose own key is the most similar of the batch's keys."""
    with float32(q.device):
        sims = F.normalize(q.float(), dim=1) @ F.normalize(k.float(), dim=1).T
    return (sims.argmax(1) == torch.arange(len(q), device=q.device)).float().mean() * 100
