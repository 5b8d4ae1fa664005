"""Warm-start sources (``model.init_from``): which weights file another run's work names.

The source is a run directory (its newest complete checkpoint, else the encoder its
``sslterm features`` export saved), a checkpoint folder, a features export folder, or an
encoder ``.safetensors`` file in the export's format (the timm state dict). Finding that
file means knowing a run directory's layout, so it lives with the run store; the trainer
hands the state dict :func:`init_state` reads to :func:`sslterm.models.init.load_encoder_state`.
A run id is turned into its directory when the run is created
(:func:`sslterm.runs.launcher.init_source`), so the trainer and the frozen profile only ever
see absolute paths.

No torch at import (the launcher checks a source before a run exists); reading the tensors
(:func:`init_state`) imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from sslterm.errors import UserError
from sslterm.eval.layout import ENCODER_FILE, FORMAT, META_FILE
from sslterm.profile.load import parse_toml
from sslterm.runs import checkpoints as ckpt

if TYPE_CHECKING:
    import torch

KEY = "model.init_from"
CHECKPOINT_MODEL = "model.safetensors"  # what accelerate's save_state writes
# Where every method keeps the encoder it is evaluated with (``Method.eval_encoder``) in its
# state dict; a momentum teacher's copy is elsewhere (``teacher.encoder.*``).
ENCODER_PREFIX = "encoder."


def weights_file(source: str | Path) -> Path:
    """The safetensors file ``source`` names: a run's newest complete checkpoint's (else its
    exported encoder), a checkpoint folder's, a features export's encoder, or the file."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UserError(f"{KEY}: {path} is not a .safetensors file")
        return path
    if not path.is_dir():
        raise UserError(f"{KEY}: {path}: no such run, folder or file")
    for inside in (CHECKPOINT_MODEL, ENCODER_FILE):
        if (path / inside).is_file():
            return path / inside
    newest = ckpt.newest_checkpoint(path / "checkpoints")
    if newest is not None:
        return newest[0] / CHECKPOINT_MODEL
    exported = path / "features" / ENCODER_FILE
    if exported.is_file():
        return exported
    raise UserError(f"{KEY}: {path} has no complete checkpoint and no features/{ENCODER_FILE}")


def recorded_encoder(file: Path) -> str | None:
    """The timm encoder the weights were made with, where their source says: a checkpoint's
    run in its frozen profile, an export in its meta.json (None for a bare file)."""
    try:
        if file.name == CHECKPOINT_MODEL:
            path = file.parents[2] / "profile.toml"
            return parse_toml(path.read_text(), str(path)).get("model", {}).get("encoder")
        meta = json.loads((file.parent / META_FILE).read_text())
        return meta.get("encoder") if meta.get("format") == FORMAT else None
    except (OSError, UserError, ValueError, AttributeError, IndexError):
        return None


def check_init_from(source: str | Path, encoder: str | None = None) -> Path:
    """The weights file, checked without loading it to hold encoder weights, of ``encoder``
    where the source records its encoder (cheap at launch; the shapes are checked against
    the encoder when the run builds it)."""
    file = weights_file(source)
    made_with = recorded_encoder(file)
    if encoder and made_with and made_with != encoder:
        raise UserError(f"{KEY}: {file} holds a {made_with} encoder, not model.encoder {encoder}")
    try:
        with safe_open(file, framework="pt") as fh:
            keys = list(fh.keys())
    except (OSError, SafetensorError) as exc:
        raise UserError(f"{KEY}: {file}: not a readable safetensors file ({exc})") from None
    if file.name == CHECKPOINT_MODEL and not any(k.startswith(ENCODER_PREFIX) for k in keys):
        raise UserError(f"{KEY}: {file} holds no encoder weights")
    if not keys:
        raise UserError(f"{KEY}: {file} holds no tensors")
    return file


def init_state(file: Path) -> dict[str, torch.Tensor]:
    """The encoder's state dict from a checkpoint's model file or an exported encoder; read
    by key, so the source's method, head sizes and probe classes do not matter."""
    from safetensors.torch import load_file

    state = load_file(file)
    if file.name != CHECKPOINT_MODEL:
        return state
    return {k.removeprefix(ENCODER_PREFIX).replace("_orig_mod.", ""): v
            for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
