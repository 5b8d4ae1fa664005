"""SimCLR: encoder + projector, NT-Xent over two views with negatives from every process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sslterm.methods.base import Method
from sslterm.methods.gather import all_gather_with_grad, rank_and_world
from sslterm.methods.losses import contrastive_topk, nt_xent
from sslterm.methods.registry import register_method
from sslterm.models import projector

if TYPE_CHECKING:
    from sslterm.profile.schema import SimCLRConfig


@register_method("simclr")
class SimCLR(Method):
    # state-dict keys encoder.*, projector.* (and the engine's online_probe.*) are those of
    # every SimCLR checkpoint so far: renaming a submodule would orphan their run directories
    shape_keys = ("projector", "projector_hidden_dim", "projector_dim")

    def __init__(self, encoder: nn.Module, head: nn.Module, temperature: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = head
        self.temperature = temperature

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: SimCLRConfig) -> SimCLR:
        head = projector(config.projector, feature_dim, config.projector_hidden_dim,
                         config.projector_dim)
        return cls(encoder, head, config.temperature)

    def _embed(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Encoder features and projections of both views in one batch ([2b, ...])."""
        h = self.encoder(torch.cat(views))
        return h, self.projector(h)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        b = views[0].shape[0]
        h, z = self._embed(views)
        rank, _ = rank_and_world()
        loss, _, _ = nt_xent(z[:b], z[b:], self.temperature,
                             candidates=all_gather_with_grad(z), offset=rank * 2 * b)
        return {"loss": loss, "features": h[:b]}

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        """NT-Xent with this process's negatives only, and how often the positive ranks
        first / in the top 5 among them."""
        b = views[0].shape[0]
        _, z = self._embed(views)
        loss, logits, positive = nt_xent(z[:b], z[b:], self.temperature)
        return {"loss": loss.detach(), **contrastive_topk(logits, positive)}
