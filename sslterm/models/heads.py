"""Projection heads, framework-free."""

from __future__ import annotations

from typing import Literal

from torch import nn


def projector(
    kind: Literal["mlp", "linear"], in_dim: int, hidden_dim: int, out_dim: int
) -> nn.Module:
    """The original experiment's head: Linear-ReLU-Linear (no BatchNorm, so a
    multi-process run computes the same function as a single process)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )
