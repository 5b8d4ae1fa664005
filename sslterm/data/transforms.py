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
    """Dataset transform returning ``n`` independent draws of ``view``, one per view the
    method asks for (picklable for workers)."""

    def __init__(self, view: Callable[[Image.Image], torch.Tensor], n: int = 2) -> None:
        self.view, self.n = view, n

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [self.view(img) for _ in range(self.n)]


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
