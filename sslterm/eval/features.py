"""Frozen-encoder feature extraction for linear probes, kNN and export."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.inference_mode()
def _forward_all(
    encoder: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    channels_last: bool,
    autocast_dtype: torch.dtype | None,
) -> tuple[list[Tensor], list[Tensor]]:
    features, labels = [], []
    for images, targets in batches:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = encoder(images)
        if out.ndim != 2:
            raise ValueError(
                f"encoder returned shape {tuple(out.shape)}; expected pooled features [B, D] "
                "(a timm model built with num_classes=0)"
            )
        features.append(out.float().cpu())
        labels.append(targets.to("cpu", torch.int64))
    return features, labels


def extract_features(
    encoder: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Features [N, D] float32 and labels [N] int64, both on CPU, of ready-made image batches.

    The encoder runs in eval mode under inference mode; afterwards every submodule gets
    back exactly the training flag it had (the original left the encoder in eval mode
    after a mid-training probe, and a blanket ``train()`` would also wake up submodules a
    caller froze on purpose). Features go to CPU batch by batch so device memory does not
    grow with the dataset. The results are ordinary tensors (not inference tensors), so
    callers may train on them or modify them in place.
    """
    device = torch.device(device)
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    try:
        features, labels = _forward_all(encoder, batches, device, channels_last, autocast_dtype)
    finally:
        for module, training in modes:  # parents first, so each child's own flag wins
            module.train(training)
    if not features:
        raise ValueError("no batches to extract features from")
    return torch.cat(features), torch.cat(labels)
