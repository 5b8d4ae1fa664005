"""BYOL: a predictor on the student, an EMA teacher (encoder + projector), symmetric loss.

As in the paper and lightly's example: each view goes through the student and the teacher
separately (BatchNorm statistics per view), the loss is the mean negative cosine of each
view's prediction to the teacher's projection of the other view, and the teacher follows the
student with a momentum rising from ``momentum_start`` to ``momentum_end`` on a cosine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from sslterm.methods.base import Method
from sslterm.methods.losses import negative_cosine, view_agreement
from sslterm.methods.momentum import Teacher, cosine_schedule, update_momentum
from sslterm.methods.registry import register_method
from sslterm.models.heads import byol_head

if TYPE_CHECKING:
    from sslterm.profile.schema import BYOLConfig


@register_method("byol")
class BYOL(Method):
    shape_keys = ("projector_hidden_dim", "projector_dim", "predictor_hidden_dim")

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module,
                 momentum_start: float, momentum_end: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor
        self.teacher = Teacher(encoder, projector)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: BYOLConfig) -> BYOL:
        c = config
        return cls(encoder, byol_head(feature_dim, c.projector_hidden_dim, c.projector_dim),
                   byol_head(c.projector_dim, c.predictor_hidden_dim, c.projector_dim),
                   c.momentum_start, c.momentum_end)

    def _student(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(x)
        z = self.projector(h)
        return h, z, self.predictor(z)

    def _loss(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        (h1, z1, p1), (_, z2, p2) = self._student(views[0]), self._student(views[1])
        t1, t2 = self.teacher(views[0]), self.teacher(views[1])
        loss = 0.5 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))
        return loss, h1, z1, z2

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        loss, h1, _, _ = self._loss(views)
        return {"loss": loss, "features": h1}

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        loss, _, z1, z2 = self._loss(views)
        return {"loss": loss.detach(), **view_agreement(z1, z2)}

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        m = cosine_schedule(step, total_steps, self.momentum_start, self.momentum_end)
        update_momentum(self.encoder, self.teacher.encoder, m)
        update_momentum(self.projector, self.teacher.projector, m)
        return {"momentum": m}
