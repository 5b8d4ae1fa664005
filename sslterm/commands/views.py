"""What a profile's method trains on: its views of a few training images, made by the data
path a CPU run takes, as one image grid (``sslterm views``, the composer's preview).

Small-image datasets go through the batched augmentation on the tensor cache
(:class:`~sslterm.data.augment.BatchAugment`), large images through the per-sample
pipeline DataLoader workers run (:func:`~sslterm.data.transforms.multi_view`): the views,
their sizes and crop scales (multi-crop included) and each view's own recipe
([augment.views]) are the run's. The method is built to ask it for its views, so the plan
is the one a run would train on.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sslterm.data.augment import BatchAugment
from sslterm.data.registry import build_splits
from sslterm.data.transforms import multi_view
from sslterm.data.views import View, describe_views, resolve_views
from sslterm.files import write_output
from sslterm.profile.schema import Profile
from sslterm.train.model import build_model

GAP = 2  # pixels between cells
BACKGROUND = 40  # grey of the gaps and around views smaller than the cell


@dataclass(frozen=True)
class ViewGrid:
    """``pixels``: uint8 [H, W, 3], one row per image, one column per view, in the method's
    order; ``plan``: the views in words."""

    pixels: np.ndarray
    images: int
    views: tuple[View, ...]
    plan: str


def view_grid(profile: Profile, images: int = 8, seed: int = 0) -> ViewGrid:
    """The views of the first ``images`` training images (a fixed, seeded draw)."""
    splits = build_splits(profile.data, profile.train.seed)
    info = splits.info
    size = profile.data.image_size or info.image_size
    method = build_model(profile, size, info.num_classes, pretrained_weights=False).model
    views = resolve_views(method.views(), size, profile.augment.crop_scale,
                          profile.augment.views.longest())
    n = min(images, len(splits.train))
    if n < 1:
        raise ValueError("the training split has no images")
    if info.small:
        batch = splits.tensors("train").take(torch.arange(n))
        generator = torch.Generator().manual_seed(seed)
        drawn = BatchAugment(profile.augment, size, info.mean, info.std, views)(batch, generator)
        per_image = [[v[i] for v in drawn] for i in range(n)]
    else:
        pipeline = multi_view(profile.augment, size, info.mean, info.std, views)
        torch.manual_seed(seed)
        per_image = [pipeline(splits.train[i][0]) for i in range(n)]
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    cell = max(v.size for v in views)
    grid = np.full((n * (cell + GAP) + GAP, len(views) * (cell + GAP) + GAP, 3), BACKGROUND,
                   dtype=np.uint8)
    for r, row in enumerate(per_image):
        for c, x in enumerate(row):
            rgb = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
            s = rgb.shape[-1]
            top = GAP + r * (cell + GAP) + (cell - s) // 2
            left = GAP + c * (cell + GAP) + (cell - s) // 2
            grid[top:top + s, left:left + s] = rgb.permute(1, 2, 0).numpy()
    return ViewGrid(grid, n, views, describe_views(views, profile.augment))


def save_grid(grid: ViewGrid, path: str | Path) -> Path:
    """The grid as a PNG (whatever the suffix), written whole or not at all."""
    buf = BytesIO()
    Image.fromarray(grid.pixels).save(buf, format="PNG")
    return write_output(path, buf.getvalue())
