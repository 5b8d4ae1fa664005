"""SimSiam: one network, a predictor and a stop-gradient instead of a teacher or negatives.

As in the paper's pseudocode and lightly's example: each view goes through the network
separately (BatchNorm statistics per view), and the loss is half the sum of each view's
prediction's negative cosine to the other view's projection, detached. As in the paper
(``fix_lr``) and solo-learn (``static_lr``), the predictor trains at the peak lr throughout
(``predictor_fixed_lr``): the lr schedule leaves it out.
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
    shape_keys = (*PredictorMethod.shape_keys, "predictor_fixed_lr")  # its own optimizer groups

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module,
                 predictor_fixed_lr: bool = True) -> None:
        super().__init__(encoder, projector, predictor)
        self.predictor_fixed_lr = predictor_fixed_lr

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: SimSiamConfig) -> SimSiam:
        c = config
        return cls(encoder, simsiam_projector(feature_dim, c.projector_hidden_dim, c.projector_dim),
                   simsiam_predictor(c.projector_dim, c.predictor_hidden_dim, c.projector_dim),
                   c.predictor_fixed_lr)

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters()) if self.predictor_fixed_lr else []

    def targets(self, views: list[Tensor], z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        return z1.detach(), z2.detach()  # the stop-gradient
