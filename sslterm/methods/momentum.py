"""Momentum (EMA) teachers: the parameter update and its cosine schedule, framework-free.

As in BYOL and MoCo v3, the teacher's parameters follow the student's by an exponential
moving average whose momentum rises from ``start`` to ``end`` (usually 0.99 -> 1) along a
half cosine over training. Buffers (BatchNorm statistics) are not averaged: the teacher
keeps its own, from its own forward passes, as in the papers' code.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """``start`` at step 0, ``end`` at the last step (``total_steps - 1``) and after."""
    if total_steps <= 1 or step >= total_steps - 1:
        return end
    return end - (end - start) * (math.cos(math.pi * step / (total_steps - 1)) + 1) / 2


@torch.no_grad()
def update_momentum(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError("student and teacher have different parameter lists")
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)


class Teacher(nn.Module):
    """A frozen deep copy of the student's encoder and projector (BYOL's target, MoCo v3's
    momentum encoder), moved only by ``update_momentum``; its output carries no gradient."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.projector = copy.deepcopy(projector)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    def follow(self, encoder: nn.Module, projector: nn.Module, step: int, total_steps: int,
               start: float, end: float) -> dict[str, float]:
        """After optimizer step ``step``: move towards the student's ``encoder`` and
        ``projector`` with the momentum of the cosine schedule ``start -> end``; returns it
        as the scalar to log."""
        m = cosine_schedule(step, total_steps, start, end)
        update_momentum(encoder, self.encoder, m)
        update_momentum(projector, self.projector, m)
        return {"momentum": m}
