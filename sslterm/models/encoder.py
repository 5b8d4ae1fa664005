"""Encoders: any timm model as a feature extractor, with a small-input stem when it helps.

ImageNet stems (7x7 stride-2 conv + max-pool) shrink a 32 px image to 8 px before
the first block; for small inputs the usual fix is a 3x3 stride-1 conv and no
max-pool. The swap keeps timm's parameter names, so exported weights load into
``timm.create_model(name, num_classes=0)`` after the same :func:`apply_small_stem`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from sslterm.errors import UserError


def supports_small_stem(model: nn.Module) -> bool:
    """ResNet-like: a plain ``conv1`` and a ``maxpool`` attribute (timm resnet*, wide_resnet*)."""
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


def apply_small_stem(model: nn.Module) -> nn.Module:
    """Replace the stem with a 3x3 stride-1 conv and drop the max-pool, in place."""
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=old.bias is not None)
    model.maxpool = nn.Identity()
    return model


def wants_small_stem(mode: Literal["auto", "on", "off"], model: nn.Module, image_size: int) -> bool:
    if mode == "off":
        return False
    if mode == "on":
        if not supports_small_stem(model):
            raise UserError(
                f"model.small_stem: 'on' needs a ResNet-like encoder with conv1 and maxpool, "
                f"not {type(model).__name__}"
            )
        return True
    return supports_small_stem(model) and image_size <= 64


def check_encoder_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"model.encoder: unknown timm model {name!r}{hint}")


def create_encoder(
    name: str,
    *,
    image_size: int,
    small_stem: Literal["auto", "on", "off"] = "auto",
    pretrained: bool = False,
) -> tuple[nn.Module, int, bool]:
    """(encoder, feature dim, small stem used). The encoder maps images to pooled features."""
    import timm

    check_encoder_name(name)
    # ViTs: position embeddings for the run's size, interpolated for other view sizes
    # (multi-crop's local views); at the run's own size the output is unchanged
    is_vit = "vit" in name or "deit" in name
    kwargs = {"img_size": image_size, "dynamic_img_size": True} if is_vit else {}
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except Exception as exc:  # timm raises many kinds (download, config, size)
        raise UserError(f"model.encoder: timm could not build {name!r}: {exc}") from None
    used = wants_small_stem(small_stem, model, image_size)
    if used:
        apply_small_stem(model)
    with torch.no_grad():
        dim = getattr(model, "num_features", None) or model(
            torch.zeros(1, 3, image_size, image_size)
        ).shape[-1]
    return model, int(dim), used
