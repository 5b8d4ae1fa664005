"""SimSiam: one network, a predictor and a stop-gradient instead of a teacher or negatives.

As in the paper's pseudocode and lightly's example: each view goes through the network
separately (BatchNorm statistics per view), and the loss is half the sum of each view's
prediction's negative cosine to the other view's projection, detached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from sslterm.methods.base import PredictorMethod
from sslterm.methods.registry import register_method
from sslterm.models.heads import simsiam_predictor, simsiam_projector

if TYPE_CHECKING:
    from sslterm.profile.schema import SimSiamConfig


@register_method("simsiam")
class SimSiam(PredictorMethod):
    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: SimSiamConfig) -> SimSiam:
        c = config
        return cls(encoder, simsiam_projector(feature_dim, c.projector_hidden_dim, c.projector_dim),
                   simsiam_predictor(c.projector_dim, c.predictor_hidden_dim, c.projector_dim))

    def targets(self, views: list[Tensor], z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        return z1.detach(), z2.detach()  # the stop-gradient
