"""Batched SimCLR augmentation: a method's views of a whole uint8 batch in a few tensor ops.

The per-sample torchvision pipeline (``transforms.simclr_view``) is the reference:
this module draws the same per-sample random parameters, vectorised, and applies
them to the whole batch, so a GPU-resident dataset never leaves the device and the
CPU path avoids per-image Python work. Views may differ in size and crop scale
(multi-crop): the views of one size and scale are drawn and processed together.

Per view, in the reference's order: random resized crop (a plain resize when
``crop`` is off) and horizontal flip, done as one separable bilinear resample (two
batched matmuls with per-sample weight matrices: PIL/torchvision's antialiased
bilinear, restricted to the crop box); random rotation; colour jitter in a random
order per sample; grayscale; optional Gaussian blur; solarization; normalisation. Each
view has its own recipe where the profile sets [augment.views] (``views.view_config``).

One code path for CPU and CUDA: parameters are drawn on the generator's device
(the images' device without one) and moved to the images, so a CPU generator gives
the same views on either device. On CPU the batch is processed in chunks that stay
in cache; chunking never changes the result, since all parameters are drawn first.
Nothing here copies between host and device (no constants from host data, no counts
read back), so a training step never waits on the GPU (tests/test_sync.py).

Images of different sizes (the batched decode path, ``sslterm.data.decode``) come as
one zero-padded batch with each image's size: crop boxes are drawn per image, and the
resampling taps stay inside each box, so padding never enters a view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from sslterm.data.views import View, resolve_views, view_config, view_groups
from sslterm.profile.schema import AugmentConfig

# ITU-R 601-2 luma, as PIL uses; sums to 1 so gray(gray(x)) == gray(x).
_LUMA = (0.299, 0.587, 0.114)
# Colour-jitter operations, numbered as in torchvision's ColorJitter.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
BLUR_SIGMA = (0.1, 2.0)
_CROP_TRIES = 10
# Views per CPU thread in one chunk: each temporary (12 KB per view at 32 px) stays
# in cache, and the per-op overhead is amortised. A multiple of 4 (see JitterParams).
CPU_CHUNK = 128
CPU_CHUNK_BYTES = CPU_CHUNK * 3 * 64 * 64 * 4  # up to 64 px inputs take full chunks
# Float input of one chunk on a GPU: batches of large padded images go in several chunks.
GPU_CHUNK_BYTES = 1 << 30


def _device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Random numbers come from the generator's device, so one seed gives one stream."""
    if generator is not None:
        return generator.device
    return torch.device(device if device is not None else "cpu")


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=_device(generator, device))


def _uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    return _rand(shape, generator, device).mul_(high - low).add_(low)


def sample_bernoulli(
    n: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample coin flips (flip, grayscale, ...) as a bool tensor [n]."""
    return _rand((n,), generator, device) < p


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's centre crop when no try fits: the whole image clamped to the ratio range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _fallback_boxes(
    height: torch.Tensor, width: torch.Tensor, ratio: tuple[float, float]
) -> tuple[torch.Tensor, ...]:
    """``_fallback_box`` per sample, for float64 sizes [n] (images of different sizes)."""
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    h = torch.where(narrow, (width / min(ratio)).round(), height)
    w = torch.where(wide & ~narrow, (height * max(ratio)).round(), width)
    return ((height - h) / 2).floor(), ((width - w) / 2).floor(), h, w


Size = int | torch.Tensor  # one image size for the batch, or each sample's [n]


def sample_crop_boxes(
    n: int,
    height: Size,
    width: Size,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integer crop boxes (top, left, h, w) [n, 4] with RandomResizedCrop.get_params' law.

    All ten tries per sample are drawn at once: area fraction uniform in ``scale``,
    aspect ratio log-uniform in ``ratio``; the first try that fits wins, else the
    centre-crop fallback. Rounding follows torchvision (float32 draws, float64 sizes).
    ``height`` and ``width`` are ints, or tensors [n] on the draws' device when every
    sample has its own image size (the batched decode path): the draws do not depend on
    the size, so one seed gives the same stream either way.
    """
    dev = _device(generator, device)
    fraction = _uniform((n, _CROP_TRIES), *scale, generator, dev)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = _uniform((n, _CROP_TRIES), *log_ratio, generator, dev).exp_().double()
    u = _rand((n, 2), generator, dev).double()
    if isinstance(height, torch.Tensor) and isinstance(width, torch.Tensor):
        hh, ww = height.double().view(n, 1), width.double().view(n, 1)
        top0, left0, h0, w0 = _fallback_boxes(hh[:, 0], ww[:, 0], ratio)
    elif isinstance(height, int) and isinstance(width, int):
        hh, ww = height, width
        top0, left0, h0, w0 = _fallback_box(height, width, ratio)
    else:
        raise TypeError("height and width must both be ints or both tensors")
    area = fraction.double() * (hh * ww)
    w = (area * aspect).sqrt_().round_()
    h = (area / aspect).sqrt_().round_()
    fits = (w > 0) & (w <= ww) & (h > 0) & (h <= hh)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)
    h = torch.where(found, h.gather(1, first).squeeze(1), h0)
    w = torch.where(found, w.gather(1, first).squeeze(1), w0)
    hh = hh if isinstance(hh, int) else hh[:, 0]
    ww = ww if isinstance(ww, int) else ww[:, 0]
    top = torch.where(found, (u[:, 0] * (hh - h + 1)).floor_().clamp_(max=hh - h), top0)
    left = torch.where(found, (u[:, 1] * (ww - w + 1)).floor_().clamp_(max=ww - w), left0)
    return torch.stack((top, left, h, w), dim=1).long()


def sample_rotation(
    n: int,
    p: float,
    degrees: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Angles in degrees [n]: uniform in [-degrees, degrees] with probability p, else 0."""
    angle = _uniform((n,), -degrees, degrees, generator, device)
    return angle * sample_bernoulli(n, p, generator, device)


def sample_blur_sigma(
    n: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Gaussian-blur sigmas [n]: uniform in BLUR_SIGMA with probability p, else 0 (no blur)."""
    sigma = _uniform((n,), *BLUR_SIGMA, generator, device)
    return sigma * sample_bernoulli(n, p, generator, device)


def jitter_ranges(jitter: tuple[float, float, float, float]) -> tuple[tuple[float, float], ...]:
    """Factor ranges of ColorJitter(brightness, contrast, saturation, hue): ``[max(0, 1 - v),
    1 + v]`` for the first three, ``[-hue, hue]`` turns for the hue shift."""
    *blends, hue = jitter
    return (*((max(0.0, 1.0 - v), 1.0 + v) for v in blends), (-hue, hue))


@dataclass(frozen=True)
class JitterParams:
    """Per-sample colour-jitter parameters for the samples of a shuffled batch.

    factors: [n, 4] brightness, contrast, saturation factors and hue shift (in turns);
        identity (1, 1, 1, 0) where the jitter is not applied.
    order: [n, 4] the operation (BRIGHTNESS..HUE) each sample applies at each stage.
        Sample i takes its hue step at stage i % 4, so the costly hue conversion runs
        once per sample on a fixed strided slice -- no index lists, no host sync.
        BatchAugment shuffles the batch first, so every sample's order is uniform
        over all 24 permutations, as with torchvision's per-call ``randperm(4)``.
    applied: [n] bool, whether the jitter was drawn for the sample at all.
    """

    factors: torch.Tensor
    order: torch.Tensor
    applied: torch.Tensor


def sample_jitter(
    n: int,
    jitter: tuple[float, float, float, float],
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> JitterParams:
    """ColorJitter(*jitter) applied with probability p: factors and order.

    Brightness, contrast and saturation take the three stages the hue step leaves
    free, in an independent uniformly random order per sample.
    """
    dev = _device(generator, device)
    factors = torch.stack(
        [_uniform((n,), lo, hi, generator, dev) for lo, hi in jitter_ranges(jitter)], dim=1
    )
    applied = sample_bernoulli(n, p, generator, dev)
    identity = torch.ones(4, device=dev)  # (1, 1, 1, 0), made on the device: no host copy
    identity[HUE] = 0.0
    factors = torch.where(applied[:, None], factors, identity)

    others = _rand((n, 3), generator, dev).argsort(dim=1)  # random order of B, C, S
    hue_stage = torch.arange(n, device=dev)[:, None] % 4
    stage = torch.arange(4, device=dev).expand(n, 4)
    rank = (stage - (stage > hue_stage).long()).clamp_(max=2)
    order = torch.where(stage == hue_stage, HUE, others.gather(1, rank))
    return JitterParams(factors, order, applied)


@dataclass(frozen=True)
class ViewParams:
    """Everything random about a batch of views, one row per view (sliceable into chunks)."""

    source: torch.Tensor  # [n] output slot: v * B + i is view v of image i
    boxes: torch.Tensor  # [n, 4] crop (top, left, h, w)
    flip: torch.Tensor  # [n] bool
    angle: torch.Tensor  # [n] rotation, degrees
    jitter: JitterParams
    gray: torch.Tensor  # [n] bool
    sigma: torch.Tensor  # [n] blur sigma, 0 = none
    solarize: torch.Tensor  # [n] bool

    def to(self, device: torch.device) -> ViewParams:
        return _map(self, lambda t: t.to(device))

    def __getitem__(self, index: slice) -> ViewParams:
        return _map(self, lambda t: t[index])


def _map(
    params: ViewParams | JitterParams, fn: Callable[[torch.Tensor], torch.Tensor]
) -> ViewParams | JitterParams:
    """Apply fn to every tensor of a (nested) parameter dataclass."""
    values = {}
    for field in fields(params):
        value = getattr(params, field.name)
        values[field.name] = _map(value, fn) if isinstance(value, JitterParams) else fn(value)
    return type(params)(**values)


def sample_views(
    cfg: AugmentConfig,
    batch: int,
    height: Size,
    width: Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    views: int = 2,
) -> ViewParams:
    """Parameters for ``views`` views of each of ``batch`` images, in a random order of the
    views*batch views. ``height``/``width``: the batch's image size, or each image's [batch]
    (a padded batch of images of different sizes, on the draws' device)."""
    n, dev = views * batch, _device(generator, device)
    per_image = isinstance(height, torch.Tensor)
    if per_image:  # drawn per slot v * batch + i (view v of image i), reordered below
        height, width = height.repeat(views), width.repeat(views)
    if cfg.crop:
        boxes = sample_crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, generator, dev)
    else:  # the whole image, made on the device (no host copy)
        zero = torch.zeros(n, dtype=torch.long, device=dev)
        boxes = torch.stack((zero, zero, zero + height, zero + width), dim=1)
    source = torch.randperm(n, generator=generator, device=dev)
    if per_image:
        boxes = boxes[source]  # row r holds view source[r]: its image's box
    return ViewParams(
        source=source,
        boxes=boxes,
        flip=sample_bernoulli(n, cfg.flip_p, generator, dev),
        angle=sample_rotation(n, cfg.rotation_p, cfg.rotation_degrees, generator, dev),
        jitter=sample_jitter(n, cfg.jitter, cfg.color_p, generator, dev),
        gray=sample_bernoulli(n, cfg.grayscale_p, generator, dev),
        sigma=sample_blur_sigma(n, cfg.blur_p if cfg.blur else 0.0, generator, dev),
        solarize=sample_bernoulli(n, cfg.solarize_p, generator, dev),
    )


def resize_weights(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int
) -> torch.Tensor:
    """Per-sample resampling matrices [n, out_size, in_size] for a crop along one axis.

    The bilinear (triangle) filter of PIL and torchvision's antialiased resize: support
    widened by the downscale factor, taps limited to the crop, weights normalised. For
    upscaling this is plain bilinear with half-pixel centres.
    """
    scale = (length / out_size).view(-1, 1, 1)
    centre = (
        start.view(-1, 1, 1)
        + (torch.arange(out_size, device=start.device) + 0.5).view(1, -1, 1) * scale
    )
    pixel = (torch.arange(in_size, device=start.device) + 0.5).view(1, 1, -1)
    weight = (1 - (pixel - centre).abs_() / scale.clamp(min=1)).clamp_(min=0)
    inside = (pixel > start.view(-1, 1, 1)) & (pixel < (start + length).view(-1, 1, 1))
    weight = weight * inside
    return weight / weight.sum(dim=2, keepdim=True)


def resized_crop(
    x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, gain: float = 1.0
) -> torch.Tensor:
    """Crop each sample to its box, resize to size x size, mirror where flip; times gain.

    Separable: rows = Wy @ x @ Wx^T with per-sample weights, flip folded into Wx.
    """
    n, c, height, width = x.shape
    top, left, h, w = boxes.to(torch.float32).unbind(dim=1)
    wy = resize_weights(top, h, height, size) * gain
    wx = resize_weights(left, w, width, size)
    wx = torch.where(flip.view(-1, 1, 1), wx.flip(1), wx)
    rows = torch.bmm(x.reshape(n, c * height, width), wx.transpose(1, 2))  # [n, c*H, size]
    wy = wy.unsqueeze(1).expand(n, c, size, height).reshape(n * c, size, height)
    return torch.bmm(wy, rows.view(n * c, height, size)).view(n, c, size, size)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each sample about its centre (bilinear, black outside), like RandomRotation(fill=0)."""
    rad = degrees.to(x.dtype).deg2rad()
    cos, sin, zero = rad.cos(), rad.sin(), torch.zeros_like(rad)
    theta = torch.stack((cos, -sin, zero, sin, cos, zero), dim=1).view(-1, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of [n, 3, H, W] images in [0, 1] by shift [n] turns.

    A hue shift keeps each pixel's max and min and moves its hue h (in sixths, ties
    resolved R, G, B like torchvision); channel c comes back as
    min + (max - min) * clamp(||h - c| - 3| - 1, 0, 1) with c = 0, 2, 4 for R, G, B
    (full within one sixth of its own hue, falling to min over the next): no HSV image.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    span = maxc - minc
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~(is_r | is_g)
    hue = (g - b) * is_r + (b - r + 2 * span) * is_g + (r - g + 4 * span) * is_b
    hue = hue.div_(span.clamp(min=1e-12)).add_(6 * shift.view(-1, 1, 1)).remainder_(6)
    centres = torch.arange(0.0, 6.0, 2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    level = (hue.unsqueeze(1) - centres).abs_().sub_(3).abs_().sub_(1).clamp_(0, 1)
    return level.mul_(span.unsqueeze(1)).add_(minc.unsqueeze(1))


def color_jitter(x: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Apply sampled jitter to [n, 3, H, W] images in [0, 1], each sample in its own order.

    Brightness, contrast and saturation are each clamp(f * x + (1 - f) * ref) with
    ref = 0, the mean gray level or the gray image, so one pass per stage applies
    whichever of the three each sample has there (f = 1 where the stage is hue).
    Works in place on x. ``params`` must start at a sample index divisible by 4.
    """
    n = x.shape[0]
    ones = torch.ones_like(params.factors[:, :1])
    blend = torch.cat((params.factors[:, :3], ones), dim=1)
    shift = params.factors[:, HUE]
    for stage in range(4):
        op = params.order[:, stage : stage + 1]
        factor = blend.gather(1, op).view(n, 1, 1, 1)
        gray = _gray(x)
        mean_gray = gray.mean(dim=(2, 3), keepdim=True)
        is_contrast = (op == CONTRAST).view(n, 1, 1, 1)
        is_saturation = (op == SATURATION).view(n, 1, 1, 1)
        ref = torch.addcmul(mean_gray * is_contrast, gray, is_saturation)
        x = x.lerp_(ref, 1 - factor).clamp_(0, 1)
        x[stage::4] = adjust_hue(x[stage::4], shift[stage::4])
    return x


def grayscale(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace masked samples by their luma in all three channels (in place)."""
    return x.lerp_(_gray(x), mask.to(x.dtype).view(-1, 1, 1, 1))


BLUR_RADIUS = math.ceil(3 * BLUR_SIGMA[1])


def blur_kernel_size(size: int) -> int:
    """Odd kernel covering three of the largest sigma each side (13 taps), as PIL's full
    Gaussian blur (solo-learn's, lightly's, DINO's) does, but no wider than the image
    allows for reflect padding. SimCLR's 10% of the image (3 taps at 32 px) cuts the
    Gaussian short on small images and blurs them less than the recipes do."""
    return 2 * max(1, min(BLUR_RADIUS, size - 1)) + 1


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma [n]; sigma 0 leaves a sample as is.

    Reflect padding as in torchvision; one grouped convolution per axis for the batch.
    """
    n, c, h, w = x.shape
    radius = kernel_size // 2
    offset = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sig = sigma.to(x.dtype).view(n, 1)
    kernel = torch.exp(-(offset**2) / (2 * sig.clamp(min=1e-3) ** 2))
    kernel = torch.where(sig > 0, kernel, (offset == 0).to(x.dtype))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    out = F.pad(x, (radius,) * 4, mode="reflect").view(1, n * c, h + 2 * radius, w + 2 * radius)
    out = F.conv2d(out, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    out = F.conv2d(out, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    return out.view(n, c, h, w)


def solarize(x: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the values at or above ``threshold`` of the masked samples of [n, 3, H, W]
    images in [0, 1]: PIL's ImageOps.solarize at ``ceil(threshold * 255)``."""
    flip = (x >= threshold) & mask.view(-1, 1, 1, 1)
    return torch.where(flip, 1.0 - x, x)


def _normalizer(
    mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) so that (x - mean) / std == x * scale + bias, shaped [1, C, 1, 1]."""
    scale = 1.0 / torch.tensor(std, dtype=torch.float32, device=device)
    bias = -torch.tensor(mean, dtype=torch.float32, device=device) * scale
    return scale.view(1, -1, 1, 1), bias.view(1, -1, 1, 1)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 (x / 255 - mean) / std on the images' device, for evaluation."""
    scale, bias = _normalizer(mean, std, images.device)
    return torch.addcmul(bias, images.float(), scale / 255.0)


class BatchAugment(torch.nn.Module):
    """Independently augmented, normalised float32 views of a uint8 image batch: the
    method's ``views`` in their declared order, each at its own size and crop scale (an
    int n: n views of the run's ``size`` and ``cfg.crop_scale``).

    Equal views are drawn together, one shuffled batch per (size, scale): two global
    views cost one pass, and so do any number of local views of one size.
    """

    def __init__(
        self, cfg: AugmentConfig, size: int, mean: Sequence[float], std: Sequence[float],
        views: Sequence[View] | int = 2,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.size = size
        self.views = resolve_views((View(),) * views if isinstance(views, int) else views,
                                   size, cfg.crop_scale, cfg.views.longest())
        self.groups = [(view_config(cfg, v), v.size, slots)
                       for v, slots in view_groups(self.views).items()]
        scale, bias = _normalizer(mean, std, torch.device("cpu"))
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None,
        sizes: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """images: uint8 [B, 3, H, W] on any device -> one float32 [B, 3, s_i, s_i] there per
        view i. ``sizes`` [B, 2] (height, width), when the images differ in size: each sits
        in the top-left corner of the padded batch, and its crops stay inside it."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        out: dict[int, torch.Tensor] = {}
        for cfg, size, slots in self.groups:
            out.update(zip(slots, self._group(images, cfg, size, len(slots), generator, sizes),
                           strict=True))
        return [out[i] for i in range(len(self.views))]

    def _group(
        self, images: torch.Tensor, cfg: AugmentConfig, size: int, views: int,
        generator: torch.Generator | None, sizes: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """``views`` views of one size and crop scale, drawn as one shuffled views*B batch."""
        batch, _, height, width = images.shape
        dev = images.device
        if sizes is None:
            params = sample_views(cfg, batch, height, width, generator, dev, views)
        else:
            hw = sizes.to(_device(generator, dev), non_blocking=True)
            params = sample_views(cfg, batch, hw[:, 0], hw[:, 1], generator, dev, views)
        params = params.to(dev)
        n = views * batch
        out = torch.empty((n, 3, size, size), device=dev)
        chunk = _chunk(dev, 3 * height * width * 4)
        for start in range(0, n, chunk):
            part = params[start : start + chunk]
            out.index_copy_(0, part.source, self._views(images, part, cfg, size))
        return list(out.split(batch))

    def _views(
        self, images: torch.Tensor, params: ViewParams, cfg: AugmentConfig, size: int
    ) -> torch.Tensor:
        """Normalised views for one chunk of views (rows of a shuffled views*B batch)."""
        x = images.index_select(0, params.source % images.shape[0]).float()
        x = resized_crop(x, params.boxes, params.flip, size, gain=1 / 255)
        if cfg.rotation_p > 0 and cfg.rotation_degrees > 0:
            x = rotate(x, params.angle)
        if cfg.jitters():
            x = color_jitter(x, params.jitter)
        if cfg.grayscale_p > 0:
            x = grayscale(x, params.gray)
        if cfg.blur and cfg.blur_p > 0:
            x = gaussian_blur(x, params.sigma, blur_kernel_size(size))
        if cfg.solarize_p > 0:
            x = solarize(x, params.solarize, cfg.solarize_threshold)
        return x.mul_(self.scale.to(x.device)).add_(self.bias.to(x.device))


def _chunk(device: torch.device, bytes_per_view: int) -> int:
    """Views processed together: CPU_CHUNK per thread on a CPU, fewer where one view's float
    input exceeds CPU_CHUNK_BYTES / CPU_CHUNK; on a GPU as many as fit GPU_CHUNK_BYTES
    (large padded images). A multiple of 4 (see JitterParams)."""
    if device.type == "cpu":
        per_thread = min(CPU_CHUNK, max(4, CPU_CHUNK_BYTES // bytes_per_view))
        return per_thread // 4 * 4 * torch.get_num_threads()
    return max(4, GPU_CHUNK_BYTES // bytes_per_view // 4 * 4)
