"""Per-sample torchvision (transforms.v2) pipelines on PIL images.

The CPU DataLoader path uses them for large images and as the fallback, and they
are the reference the batched module (``augment.BatchAugment``) is tested against,
so both are built from the same AugmentConfig, ranges and constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

from sslterm.data.augment import BLUR_SIGMA, blur_kernel_size, jitter_ranges
from sslterm.data.views import View, resolve_views, view_config
from sslterm.profile.schema import AugmentConfig


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]


def simclr_view(
    cfg: AugmentConfig, size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """One random SimCLR view of a PIL image as a normalised float tensor [3, size, size].

    Random resized crop (a plain resize when ``cfg.crop`` is off), flip, rotation,
    ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with probability color_p, grayscale, optional
    blur; steps with zero probability are left out.
    """
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio)
        if cfg.crop
        else v2.Resize((size, size))
    ]
    if cfg.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.flip_p))
    if cfg.rotation_p > 0 and cfg.rotation_degrees > 0:
        rotation = v2.RandomRotation(
            cfg.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR
        )
        steps.append(v2.RandomApply([rotation], p=cfg.rotation_p))
    if cfg.color_strength > 0 and cfg.color_p > 0:
        brightness, contrast, saturation, hue = jitter_ranges(cfg.color_strength)
        jitter = v2.ColorJitter(brightness, contrast, saturation, hue)
        steps.append(v2.RandomApply([jitter], p=cfg.color_p))
    if cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_p))
    if cfg.blur and cfg.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(size), sigma=BLUR_SIGMA)
        steps.append(v2.RandomApply([blur], p=cfg.blur_p))
    return v2.Compose(steps + _to_normalized_tensor(mean, std))


class Views:
    """Dataset transform returning one independent draw of each pipeline, in order: the views
    the method asks for (picklable for workers)."""

    def __init__(self, pipelines: Sequence[Callable[[Image.Image], torch.Tensor]]) -> None:
        self.pipelines = tuple(pipelines)

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [view(img) for view in self.pipelines]


def multi_view(
    cfg: AugmentConfig, size: int, mean: Sequence[float], std: Sequence[float],
    views: Sequence[View],
) -> Views:
    """The per-sample counterpart of ``BatchAugment(cfg, size, mean, std, views)``: one
    ``simclr_view`` per view, at its size and crop scale (equal views share a pipeline)."""
    resolved = resolve_views(views, size, cfg.crop_scale)
    pipelines = {v: simclr_view(view_config(cfg, v), v.size, mean, std) for v in resolved}
    return Views([pipelines[v] for v in resolved])


def eval_transform(
    size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """Un-augmented normalised tensor for evaluation and feature extraction.

    With ``resize`` (ImageNet: 256 for size 224): shorter side to ``resize``, then a
    centre crop of ``size``. Without it the image is used as is (small images already
    at ``size``).
    """
    steps: list[v2.Transform] = []
    if resize is not None:
        steps = [v2.Resize(resize), v2.CenterCrop(size)]
    return v2.Compose(steps + _to_normalized_tensor(mean, std))
