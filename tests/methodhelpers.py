"""Inputs for the method-level tests: a small real encoder and seeded views."""

from __future__ import annotations

import torch
from torch import nn


def conv_encoder() -> nn.Module:
    """A real conv encoder with BatchNorm, so how views are batched (per view, or several
    together) changes its statistics and a reference that batches differently fails."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def seeded_views(seed: int, sizes: tuple[int, ...] = (10, 10), batch: int = 8) -> list[torch.Tensor]:
    """One random [batch, 3, s, s] view per size, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, s, s, generator=g) for s in sizes]
