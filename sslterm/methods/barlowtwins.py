"""Barlow Twins: the cross-correlation of two views' embeddings pulled towards the identity.

As in the paper's code and solo-learn: each view goes through the encoder and a three-layer
projector separately (BatchNorm statistics per view); the embeddings are standardised per
dimension over the batch, and the loss is ``scale * (on_diag + lambda * off_diag)`` of their
cross-correlation. Standardisation and correlation are statistics of the GLOBAL batch: each
process gathers both views' embeddings from all processes (with gradients) and computes the
same loss, so N processes train like one on the whole batch. Evaluation uses the encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from sslterm.methods.base import GlobalBatchMethod
from sslterm.methods.losses import barlow_twins_loss
from sslterm.methods.registry import register_method
from sslterm.models.heads import barlowtwins_projector

if TYPE_CHECKING:
    from sslterm.profile.schema import BarlowTwinsConfig


@register_method("barlowtwins")
class BarlowTwins(GlobalBatchMethod):
    def __init__(self, encoder: nn.Module, projector: nn.Module, lambda_offdiag: float,
                 scale_loss: float) -> None:
        super().__init__(encoder, projector)
        self.lambda_offdiag, self.scale_loss = lambda_offdiag, scale_loss

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: BarlowTwinsConfig) -> BarlowTwins:
        c = config
        return cls(encoder, barlowtwins_projector(feature_dim, c.projector_hidden_dim,
                                                  c.projector_dim),
                   c.lambda_offdiag, c.scale_loss)

    def terms(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        loss, on_diag, off_diag = barlow_twins_loss(z1, z2, self.lambda_offdiag, self.scale_loss)
        return {"loss": loss, "on_diag": on_diag.detach(), "off_diag": off_diag.detach()}
