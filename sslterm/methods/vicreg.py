"""VICReg: invariance between two views, variance and decorrelation within each view.

As in the paper's code and solo-learn: each view goes through the encoder and a three-layer
projector (the "expander") separately (BatchNorm statistics per view), and the loss weighs
the invariance (mean squared distance of the views' embeddings), variance (hinge on each
dimension's std; averaged over the views as the paper's code, or summed as solo-learn with
``variance_sum``) and covariance (squared off-diagonal covariances) terms. The last two are
statistics of the GLOBAL batch: each process gathers both views' embeddings from all
processes (with gradients) and computes the same loss, so N processes train like one on the
whole batch. Evaluation uses the encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from sslterm.methods.base import GlobalBatchMethod
from sslterm.methods.losses import vicreg_loss
from sslterm.methods.registry import register_method
from sslterm.models.heads import vicreg_projector

if TYPE_CHECKING:
    from sslterm.profile.schema import VICRegConfig


@register_method("vicreg")
class VICReg(GlobalBatchMethod):
    def __init__(self, encoder: nn.Module, projector: nn.Module, invariance_weight: float,
                 variance_weight: float, covariance_weight: float,
                 variance_sum: bool = False) -> None:
        super().__init__(encoder, projector)
        self.weights = (invariance_weight, variance_weight, covariance_weight)
        self.variance_sum = variance_sum

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: VICRegConfig) -> VICReg:
        c = config
        return cls(encoder, vicreg_projector(feature_dim, c.projector_hidden_dim, c.projector_dim),
                   c.invariance_weight, c.variance_weight, c.covariance_weight, c.variance_sum)

    def terms(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        """The loss and its three unweighted terms."""
        loss, invariance, variance, covariance = vicreg_loss(
            z1, z2, *self.weights, variance_sum=self.variance_sum)
        return {"loss": loss, "invariance": invariance.detach(), "variance": variance.detach(),
                "covariance": covariance.detach()}
