"""The run's model, built from its profile alone: the chosen method around a timm encoder,
with the engine's online probe. Training and ``sslterm features`` build it the same way, so
a checkpoint's state dict loads into either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

import sslterm.methods  # noqa: F401  (registers the built-in methods)
from sslterm.methods.base import Method
from sslterm.methods.registry import get_method
from sslterm.models import create_encoder
from sslterm.models.init import load_encoder_state
from sslterm.profile.schema import Profile
from sslterm.runs.warmstart import check_init_from, init_state


def load_init_weights(encoder: nn.Module, source: str | Path) -> Path:
    """Copy ``source``'s encoder weights (``model.init_from``: a run, checkpoint, export or
    file, as :func:`sslterm.runs.warmstart.weights_file` resolves it) into ``encoder``;
    returns the file read."""
    file = check_init_from(source)
    load_encoder_state(encoder, init_state(file), file)
    return file


@dataclass
class Built:
    model: Method
    feature_dim: int
    small_stem: bool
    init_weights: str = ""  # the file model.init_from's weights were read from, if they were


def build_model(p: Profile, image_size: int, num_classes: int, *,
                pretrained_weights: bool = True) -> Built:
    """``model.method`` around ``model.encoder``, configured by the method's own section;
    with ``train.online_probe``, a linear layer on its features (``online_probe``).
    ``pretrained_weights=False`` skips the starting weights (``model.pretrained``'s download,
    ``model.init_from``'s file) where a checkpoint's weights replace them anyway. Warm-start
    weights go into the encoder before the method is built around it (a momentum teacher
    starts as a copy of it)."""
    encoder, feature_dim, small_stem = create_encoder(
        p.model.encoder, image_size=image_size, small_stem=p.model.small_stem,
        pretrained=p.model.pretrained and pretrained_weights,
    )
    init_weights = ""
    if p.model.init_from and pretrained_weights:
        init_weights = str(load_init_weights(encoder, p.model.init_from))
    model = get_method(p.model.method).create(encoder, feature_dim, p.method_config())
    if p.train.online_probe:
        model.online_probe = nn.Linear(feature_dim, num_classes)
    return Built(model, feature_dim, small_stem, init_weights)


def shape_settings(p: Profile, small_stem: bool, num_classes: int) -> dict[str, object]:
    """The settings that shape the model's and the optimizer's saved tensors (names, shapes,
    state kinds), recorded in each checkpoint: a resume that changes one of them cannot
    load it. The method names its own (``Method.shape_keys``)."""
    m, t = p.model, p.train
    config = p.method_config()
    return {
        "model.method": m.method, "model.encoder": m.encoder,
        "model.small_stem": "on" if small_stem else "off",
        **{f"{m.method}.{k}": getattr(config, k) for k in get_method(m.method).shape_keys},
        "train.optimizer": t.optimizer, "train.online_probe": t.online_probe,
        "online probe classes": num_classes if t.online_probe else 0,
    }
