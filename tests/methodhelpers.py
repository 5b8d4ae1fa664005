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


def step_alike(ours: nn.Module, theirs: nn.Module, views: list[torch.Tensor],
               params: tuple[list, list], opts: tuple, **tol: float) -> dict[str, torch.Tensor]:
    """One training step of our method and of a reference (``loss(views)``, ``backbone``)
    on the same views: equal loss, view-0 features and every gradient (``params``: ours and
    theirs, in the same order), then both optimizers step. Returns our method's output."""
    out = ours(views)
    ref_loss = theirs.loss(views)
    torch.testing.assert_close(out["loss"], ref_loss)
    torch.testing.assert_close(out["features"], theirs.backbone(views[0]))
    for opt in opts:
        opt.zero_grad()
    out["loss"].backward()
    ref_loss.backward()
    mine, ref = params
    assert len(mine) == len(ref)
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    for opt in opts:
        opt.step()
    return out
