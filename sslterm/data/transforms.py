"""Per-sample augmentation on PIL images: torchvision's reference pipeline and the fast one
the CPU DataLoader path runs.

``simclr_view`` is the torchvision (transforms.v2) pipeline: the reference that the batched
module (``augment.BatchAugment``) and :class:`SampleView` are tested against, all built
from the same AugmentConfig, ranges and constants.

:class:`SampleView` is what DataLoader workers run for large images (and the fallback):
the same random parameters as the reference, drawn from torch's generator in the same
order (so one seed gives the same crops, flips and factors), applied as PIL operations on
uint8 images with a float tensor made only at the end. Two steps differ:

- blur: PIL's ``ImageFilter.GaussianBlur(sigma)``, with the reference's sigma law (uniform
  in BLUR_SIGMA, with probability blur_p) -- the blur of lightly's and the DINO paper's
  pipelines. PIL approximates the full Gaussian of that sigma by three box passes (edges
  extended); torchvision samples it on ``blur_kernel_size`` taps (three of the largest
  sigma each side, reflected edges). The two agree to about one grey level at 224 and at
  32 px. PIL's costs 2-3 ms per 224 px view against 60-86 ms for ``v2.GaussianBlur`` on a
  PIL image.
- solarization: PIL's ``ImageOps.solarize`` on the uint8 view, as the reference's
  ``v2.RandomSolarize`` on a PIL image.
- decoding (:class:`Views` given a file path): the crop boxes of all views are drawn at
  full resolution from the file's header, then the JPEG is decoded at the largest
  reduction (1/2, 1/4, 1/8: Pillow's ``draft``) that keeps every box at least its
  view's size, and each box is resized from the reduced image. The crop law is
  unchanged; the pixels differ by the DCT-domain downscale.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms import RandomResizedCrop as RandomResizedCropV1
from torchvision.transforms.v2 import functional as TF

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
    ColorJitter(brightness, contrast, saturation, hue) with probability color_p, grayscale,
    optional blur, solarization; steps with zero probability are left out.
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
    if cfg.jitters():
        steps.append(v2.RandomApply([v2.ColorJitter(*cfg.jitter)], p=cfg.color_p))
    if cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_p))
    if cfg.blur and cfg.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(size), sigma=BLUR_SIGMA)
        steps.append(v2.RandomApply([blur], p=cfg.blur_p))
    if cfg.solarize_p > 0:
        steps.append(v2.RandomSolarize(solarize_level(cfg.solarize_threshold), p=cfg.solarize_p))
    return v2.Compose(steps + _to_normalized_tensor(mean, std))


def solarize_level(threshold: float) -> int:
    """The uint8 level from which PIL inverts: values >= ``threshold`` of the maximum."""
    return math.ceil(threshold * 255 - 1e-9)


@dataclass(frozen=True)
class ViewDraw:
    """Everything random about one per-sample view; it depends on the image's size alone,
    so it can be drawn before decoding."""

    box: tuple[int, int, int, int]  # top, left, height, width at full resolution
    flip: bool
    angle: float | None  # rotation in degrees; None: not rotated
    # order, then the brightness, contrast, saturation and hue factors (None: not jittered)
    jitter: tuple[tuple[int, ...], float | None, float | None, float | None, float | None] | None
    gray: bool
    sigma: float | None  # blur; None: not blurred
    solarize: bool = False


_JITTER_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _coin(p: float) -> bool:
    """torchvision's RandomApply draw: applied unless rand >= p (drawn even when p is 1)."""
    return bool(torch.rand(1) < p)


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high).item())


class SampleView:
    """One random view of a PIL image as a normalised float tensor [3, size, size]: the
    reference ``simclr_view``'s parameters and steps on uint8 PIL images, with PIL's blur
    (see the module docstring). Picklable, for workers."""

    def __init__(
        self, cfg: AugmentConfig, size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.cfg, self.size = cfg, size
        std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)  # (x / 255 - mean) / std = x * scale + bias
        self.bias = -torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) / std_t
        # ColorJitter leaves out (and draws nothing for) a component of strength 0
        self.jitter_ranges = [None if v == 0 else r
                              for v, r in zip(cfg.jitter, jitter_ranges(cfg.jitter), strict=True)]
        self.solarize_level = solarize_level(cfg.solarize_threshold)

    def draw(self, width: int, height: int) -> ViewDraw:
        """The view's parameters for an image of this size, in the reference's draw order."""
        c = self.cfg
        if c.crop:  # a zero-stride tensor: get_params only reads its size
            shape = torch.empty(1, 1, 1).expand(1, height, width)
            box = tuple(RandomResizedCropV1.get_params(shape, list(c.crop_scale),
                                                       list(c.crop_ratio)))
        else:
            box = (0, 0, height, width)
        flip = c.flip_p > 0 and _coin(c.flip_p)
        angle = None
        if c.rotation_p > 0 and c.rotation_degrees > 0 and _coin(c.rotation_p):
            angle = _uniform(-c.rotation_degrees, c.rotation_degrees)
        jitter = None
        if c.jitters() and _coin(c.color_p):
            order = tuple(torch.randperm(4).tolist())
            b, ct, s, h = (None if r is None else _uniform(*r) for r in self.jitter_ranges)
            jitter = (order, b, ct, s, h)
        gray = c.grayscale_p > 0 and _coin(c.grayscale_p)
        sigma = None
        if c.blur and c.blur_p > 0 and _coin(c.blur_p):
            sigma = _uniform(*BLUR_SIGMA)
        solarize = c.solarize_p > 0 and _coin(c.solarize_p)
        return ViewDraw(box, flip, angle, jitter, gray, sigma, solarize)  # type: ignore[arg-type]

    def pixels(self, image: Image.Image, draw: ViewDraw, reduced: float = 1.0) -> Image.Image:
        """The augmented view as a uint8 RGB PIL image. ``reduced``: the image was decoded at
        1/reduced of the size the box was drawn for (``draft``)."""
        top, left, h, w = draw.box
        out = (self.size, self.size)
        if reduced == 1.0:  # exactly torchvision's resized_crop on a PIL image
            whole = (top, left, h, w) == (0, 0, image.height, image.width)
            view = (image if whole else image.crop((left, top, left + w, top + h))).resize(
                out, Image.Resampling.BILINEAR)
        else:
            area = (left / reduced, top / reduced, (left + w) / reduced, (top + h) / reduced)
            view = image.resize(out, Image.Resampling.BILINEAR, box=area)
        if draw.flip:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if draw.angle is not None:
            view = TF.rotate(view, draw.angle, interpolation=InterpolationMode.BILINEAR)
        if draw.jitter is not None:
            order, *factors = draw.jitter
            for op in order:
                if factors[op] is not None:
                    view = _JITTER_OPS[op](view, factors[op])
        if draw.gray:
            view = TF.rgb_to_grayscale(view, num_output_channels=3)
        if draw.sigma is not None:
            view = view.filter(ImageFilter.GaussianBlur(draw.sigma))
        if draw.solarize:
            view = ImageOps.solarize(view, self.solarize_level)
        return view

    def to_tensor(self, view: Image.Image) -> torch.Tensor:
        """uint8 HWC -> normalised float CHW: ToImage, ToDtype and Normalize as one scale and
        shift (the uint8 made contiguous first: strided float ops cost twice as much)."""
        x = torch.from_numpy(np.array(view, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        return x.float().mul_(self.scale).add_(self.bias)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.to_tensor(self.pixels(image, self.draw(image.width, image.height)))


_DRAFT_SCALES = (8, 4, 2)


def draft_scale(draws: Sequence[ViewDraw], sizes: Sequence[int]) -> int:
    """The largest JPEG reduction (8, 4, 2, else 1) that keeps every crop box at least its
    view's size, so no view is upsampled because of it."""
    for scale in _DRAFT_SCALES:
        if all(min(d.box[2], d.box[3]) >= scale * size
               for d, size in zip(draws, sizes, strict=True)):
            return scale
    return 1


class Views:
    """Dataset transform returning one independent draw of each view, in order: the views
    the method asks for (picklable for workers). Takes a PIL image, or an image file's path:
    then the boxes are drawn from its header and a JPEG is decoded at reduced size where
    every box allows (``draft_scale``)."""

    def __init__(self, pipelines: Sequence[SampleView]) -> None:
        self.pipelines = tuple(pipelines)

    def __call__(self, source: Image.Image | str | os.PathLike[str]) -> list[torch.Tensor]:
        if isinstance(source, Image.Image):
            return [view(source) for view in self.pipelines]
        with Image.open(source) as image:
            width, height = image.size
            draws = [view.draw(width, height) for view in self.pipelines]
            scale = draft_scale(draws, [view.size for view in self.pipelines])
            reduced = 1.0
            if scale > 1:
                drafted = image.draft("RGB", (width // scale, height // scale))
                if drafted is not None:  # (mode, box of the full image in reduced pixels)
                    reduced = width / drafted[1][2]
            rgb = image.convert("RGB")
        return [view.to_tensor(view.pixels(rgb, d, reduced))
                for view, d in zip(self.pipelines, draws, strict=True)]


def multi_view(
    cfg: AugmentConfig, size: int, mean: Sequence[float], std: Sequence[float],
    views: Sequence[View],
) -> Views:
    """The per-sample counterpart of ``BatchAugment(cfg, size, mean, std, views)``: one
    :class:`SampleView` per view, at its size and crop scale (equal views share one)."""
    resolved = resolve_views(views, size, cfg.crop_scale, cfg.views.longest())
    pipelines = {v: SampleView(view_config(cfg, v), v.size, mean, std) for v in resolved}
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
