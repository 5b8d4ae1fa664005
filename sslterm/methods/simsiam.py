"""SimSiam: one network, a predictor and a stop-gradient instead of a teacher or negatives.

As in the paper's pseudocode and lightly's example: each view goes through the network
separately (BatchNorm statistics per view), and the loss is half the sum of each view's
prediction's negative cosine to the other view's projection, detached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from sslterm.methods.base import Method
from sslterm.methods.losses import negative_cosine, view_agreement
from sslterm.methods.registry import register_method
from sslterm.models.heads import simsiam_predictor, simsiam_projector

if TYPE_CHECKING:
    from sslterm.profile.schema import SimSiamConfig


@register_method("simsiam")
class SimSiam(Method):
    shape_keys = ("projector_hidden_dim", "projector_dim", "predictor_hidden_dim")

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: SimSiamConfig) -> SimSiam:
        c = config
        return cls(encoder, simsiam_projector(feature_dim, c.projector_hidden_dim, c.projector_dim),
                   simsiam_predictor(c.projector_dim, c.predictor_hidden_dim, c.projector_dim))

    def _branch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(x)
        z = self.projector(h)
        return h, z, self.predictor(z)

    def _loss(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        (h1, z1, p1), (_, z2, p2) = self._branch(views[0]), self._branch(views[1])
        loss = 0.5 * (negative_cosine(p1, z2.detach()) + negative_cosine(p2, z1.detach()))
        return loss, h1, z1, z2

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        loss, h1, _, _ = self._loss(views)
        return {"loss": loss, "features": h1}

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        loss, _, z1, z2 = self._loss(views)
        return {"loss": loss.detach(), **view_agreement(z1, z2)}
