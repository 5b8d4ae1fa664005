"""DINO: self-distillation with no labels, a student and an EMA teacher, with multi-crop.

As in the paper (Caron et al. 2021) and its code (facebookresearch/dino):

- each image gives 2 global views (the run's size, ``global_scale``) and ``local_crops``
  small local views (``local_size``, ``local_scale``); the student sees them all, the
  teacher only the global ones;
- views of one resolution go through the encoder together, concatenated along the batch,
  as the paper's ``MultiCropWrapper`` does: one pass per resolution instead of one per view
  (faster), and the encoder's BatchNorm normalises over all views of that resolution;
- the loss is :func:`~sslterm.methods.losses.dino_loss`: the student's distribution of each
  view against the teacher's of every other global view, the teacher's centred by a
  running mean of its outputs (``center``, a buffer: checkpoints keep it) and sharpened by
  a temperature that warms up over the first epochs;
- the teacher follows the student by EMA with a momentum rising on a cosine, and the head's
  last layer gets no gradient in the first ``freeze_last_layer_epochs`` epochs.

The schedule (temperature, freezing) is read from the engine's position (``set_progress``),
which a resume restores. Evaluation and export use the student's encoder.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sslterm.data.views import View
from sslterm.methods.base import Method
from sslterm.methods.losses import dino_center, dino_loss, dino_teacher_entropy
from sslterm.methods.momentum import Teacher
from sslterm.methods.registry import register_method
from sslterm.models.heads import DINOHead

if TYPE_CHECKING:
    from sslterm.profile.schema import DINOConfig


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """The teacher's temperature in ``epoch``: linear from ``warmup_temp`` (epoch 0) to
    ``temp`` (epoch ``warmup_epochs - 1``), then ``temp`` (the paper's code and lightly:
    ``linspace(warmup_temp, temp, warmup_epochs)[epoch]``)."""
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


def by_resolution(views: list[Tensor]) -> list[list[int]]:
    """Runs of consecutive views of the same size (the paper's ``MultiCropWrapper``)."""
    runs: list[list[int]] = []
    for i, v in enumerate(views):
        if runs and views[runs[-1][0]].shape[-2:] == v.shape[-2:]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


@register_method("dino")
class DINO(Method):
    shape_keys = ("projector_hidden_dim", "bottleneck_dim", "output_dim", "norm_last_layer",
                  "head_batch_norm", "head_layers")

    def __init__(self, encoder: nn.Module, head: DINOHead, config: DINOConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.teacher = Teacher(encoder, head)
        self.c = config
        self.register_buffer("center", torch.zeros(config.output_dim))
        self.epoch = 0  # of the step about to run; set_progress keeps it

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: DINOConfig) -> DINO:
        c = config
        head = DINOHead(feature_dim, c.projector_hidden_dim, c.bottleneck_dim, c.output_dim,
                        batch_norm=c.head_batch_norm, norm_last_layer=c.norm_last_layer,
                        layers=c.head_layers)
        return cls(encoder, head, c)

    def views(self) -> tuple[View, ...]:
        c = self.c
        return ((View(scale=c.global_scale),) * 2
                + (View(size=c.local_size, scale=c.local_scale),) * c.local_crops)

    def set_progress(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        self.epoch = step // max(steps_per_epoch, 1)

    def teacher_temp(self) -> float:
        c = self.c
        return teacher_temperature(self.epoch, c.warmup_teacher_temp, c.teacher_temp,
                                   c.warmup_teacher_temp_epochs)

    def _student(self, views: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """The student's head outputs of every view and the encoder features of view 0."""
        runs = by_resolution(views)
        feats = [self.encoder(torch.cat([views[i] for i in run])) for run in runs]
        frozen = self.training and self.epoch < self.c.freeze_last_layer_epochs
        out = self.head(torch.cat(feats), freeze_last_layer=frozen)
        return list(out.chunk(len(views))), feats[0][: len(views[0])]

    def _teacher(self, views: list[Tensor]) -> list[Tensor]:
        return list(self.teacher(torch.cat(views[:2])).chunk(2))

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        student, h0 = self._student(views)
        teacher = self._teacher(views)
        temp = self.teacher_temp()
        loss = dino_loss(teacher, student, self.center, temp, self.c.student_temp)
        entropy = dino_teacher_entropy(teacher, self.center, temp)
        self.center.copy_(dino_center(self.center, teacher, self.c.center_momentum))
        return {"loss": loss, "features": h0, "teacher_entropy": entropy,
                "kl": self._kl(loss, entropy),
                "teacher_temp": torch.tensor(temp, dtype=torch.float64)}

    def _kl(self, loss: Tensor, entropy: Tensor) -> Tensor:
        """KL(teacher || student) over the loss's pairs: the cross-entropy less the teacher's
        entropy (each teacher view is in equally many pairs). The loss alone sits near ln K
        while the teacher is near uniform, whether or not the student learns; the KL says
        how far the student is from its targets."""
        return (loss.detach() - entropy * math.log(self.c.output_dim)).float()

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        """The training loss at the current temperature and center, which stays as it is."""
        student, _ = self._student(views)
        teacher = self._teacher(views)
        temp = self.teacher_temp()
        loss = dino_loss(teacher, student, self.center, temp, self.c.student_temp)
        entropy = dino_teacher_entropy(teacher, self.center, temp)
        return {"loss": loss.detach(), "teacher_entropy": entropy, "kl": self._kl(loss, entropy)}

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return self.teacher.follow(self.encoder, self.head, step, total_steps,
                                   self.c.momentum_start, self.c.momentum_end)
