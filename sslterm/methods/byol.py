"""BYOL: a predictor on the student, an EMA teacher (encoder + projector), symmetric loss.

As in the paper and solo-learn: each view goes through the student and the teacher
separately (BatchNorm statistics per view), the loss sums ``2 - 2 cos`` of each view's
prediction to the teacher's projection of the other view (:func:`byol_loss`; four times
lightly's example scale, which the published learning rates assume), and the teacher
follows the student with a momentum rising from ``momentum_start`` to ``momentum_end`` on a
cosine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from sslterm.methods.base import PredictorMethod
from sslterm.methods.losses import byol_loss
from sslterm.methods.momentum import Teacher
from sslterm.methods.registry import register_method
from sslterm.models.heads import byol_head

if TYPE_CHECKING:
    from sslterm.profile.schema import BYOLConfig


@register_method("byol")
class BYOL(PredictorMethod):
    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module,
                 momentum_start: float, momentum_end: float) -> None:
        super().__init__(encoder, projector, predictor)
        self.teacher = Teacher(encoder, projector)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: BYOLConfig) -> BYOL:
        c = config
        return cls(encoder, byol_head(feature_dim, c.projector_hidden_dim, c.projector_dim),
                   byol_head(c.projector_dim, c.predictor_hidden_dim, c.projector_dim),
                   c.momentum_start, c.momentum_end)

    def pair_loss(self, p: Tensor, target: Tensor) -> Tensor:
        return byol_loss(p, target)

    def targets(self, views: list[Tensor], z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        return self.teacher(views[0]), self.teacher(views[1])

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return self.teacher.follow(self.encoder, self.projector, step, total_steps,
                                   self.momentum_start, self.momentum_end)
