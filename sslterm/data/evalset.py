"""Un-augmented, normalised batches of a split, for feature extraction.

Shared by the training engine (kNN, linear-eval callbacks) and ``sslterm
features``, so both see exactly the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from sslterm.data.augment import normalize
from sslterm.data.datasets import Transformed
from sslterm.data.registry import Splits
from sslterm.data.transforms import eval_transform


def eval_batches(
    splits: Splits,
    split: str,
    indices: torch.Tensor,
    *,
    size: int,
    batch_size: int,
    device: torch.device,
    use_tensors: bool,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images [B,3,size,size] on device, labels)`` for ``indices`` of ``split``.

    Small images come from the uint8 tensor cache (resized on the device when the
    profile asks for another size); large ones go through a DataLoader with the
    resize + centre-crop evaluation transform.
    """
    info = splits.info
    if use_tensors:
        data = splits.tensors(split)
        for chunk in indices.split(batch_size):
            x = normalize(data.take(chunk).to(device), info.mean, info.std)
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)
            yield x, data.labels[chunk]
        return
    resize = None if info.small else int(size * 256 / 224)
    dataset = Transformed(getattr(splits, split), eval_transform(size, info.mean, info.std,
                                                                 resize=resize))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices.tolist()), batch_size=batch_size,
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y
