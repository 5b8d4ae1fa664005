"""Warm starts (``model.init_from``): a new run's encoder starts from another run's weights.

This module only fits a state dict into an encoder. Which file a source names (a run, a
checkpoint, an export) and reading it is the run store's business
(:mod:`sslterm.runs.warmstart`); :func:`sslterm.train.model.load_init_weights` joins the two.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sslterm.errors import UserError

KEY = "model.init_from"


def first_mismatch(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]
) -> str | None:
    """What is wrong with the first bad key, in the encoder's own key order (None: all fit)."""
    for key, tensor in expected.items():
        if key not in found:
            return f"has no {key}"
        if found[key].shape != tensor.shape:
            return (f"{key} has shape {list(found[key].shape)}, the encoder needs "
                    f"{list(tensor.shape)}")
    extra = next((k for k in found if k not in expected), None)
    return None if extra is None else f"has {extra}, which the encoder lacks"


def load_encoder_state(
    encoder: nn.Module, state: dict[str, torch.Tensor], origin: str | Path
) -> None:
    """Copy ``state`` into ``encoder`` (in place). Another architecture (``model.encoder``,
    ``model.small_stem``) is a one-line error naming ``origin`` (the file the state came
    from) and the first key that does not fit."""
    problem = first_mismatch(encoder.state_dict(), state)
    if problem:
        raise UserError(f"{KEY}: {origin} {problem} (another model.encoder or model.small_stem?)")
    encoder.load_state_dict(state)
