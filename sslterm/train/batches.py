"""The training data path: augmented views and labels of this rank's batches.

Small images come from the uint8 tensor cache and are augmented in batch on the device
(:class:`BatchAugment`); large ones go through per-sample torchvision transforms in
DataLoader workers. Either way a batch holds the views the method asks for, in its order,
each at its own size and crop scale (multi-crop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor

from sslterm.data.augment import BatchAugment
from sslterm.data.datasets import FileItems, Transformed, file_samples
from sslterm.data.registry import Splits
from sslterm.data.sampler import ShardedBatches, ShardedBatchSampler
from sslterm.data.transforms import Views, multi_view
from sslterm.data.views import View, resolve_views
from sslterm.errors import TrainingError, UserError
from sslterm.profile.schema import DataConfig, Profile


def uses_tensor_cache(data: DataConfig, small: bool) -> bool:
    """Whether training (and evaluation) images come from the uint8 tensor cache: always for
    ``data.augment = "gpu"``, for "auto" with small images and the cache on."""
    return data.augment == "gpu" or (data.augment == "auto" and small and data.cache)


def keep_resident(mode: str, nbytes: int, free_bytes: int) -> bool:
    """Whether the cached training images live on the GPU: always for ``data.augment =
    "gpu"``; for "auto" when they take at most half the free memory (the rest is for
    the model and activations). Otherwise batches are copied over per step."""
    return mode == "gpu" or nbytes <= free_bytes // 2


class Batches:
    """This rank's training batches and the fixed validation views, for one run."""

    def __init__(self, p: Profile, splits: Splits, size: int, views: Sequence[View],
                 sampler: ShardedBatches, device: torch.device, rank: int,
                 main_first: Callable[[], AbstractContextManager]) -> None:
        self.p, self.splits, self.size = p, splits, size
        try:  # the method's views with the run's size and crop scale filled in
            self.views = resolve_views(views, size, p.augment.crop_scale)
        except ValueError as e:
            raise TrainingError(f"the method's views: {e}") from None
        self.sampler, self.device = sampler, device
        info, a = splits.info, p.augment
        self.batched = uses_tensor_cache(p.data, info.small)
        self.resident = True
        if self.batched:
            with main_first():  # decode once; the other ranks read the cache
                tensors = splits.tensors("train")
            if device.type == "cuda":
                free, nbytes = torch.cuda.mem_get_info(device)[0], tensors.images.nbytes
                if p.data.augment == "gpu" and nbytes > free:
                    raise UserError(
                        f"data.augment: 'gpu' keeps the {nbytes / 2**30:.1f} GiB of cached "
                        f"images on the GPU, which has {free / 2**30:.1f} GiB free; use 'auto'"
                    )
                self.resident = keep_resident(p.data.augment, nbytes, free)
            dev = device if self.resident else torch.device("cpu")
            self.train_images = tensors.images.to(dev)
            self.train_labels = tensors.labels.to(dev)
            self.augment = BatchAugment(a, size, info.mean, info.std, self.views).to(device)
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(p.train.seed * 1000 + rank)
        else:
            self.batch_sampler = ShardedBatchSampler(sampler)
            workers = p.data.num_workers
            samples = file_samples(splits.train)  # a path lets a worker decode at reduced size
            self.loader = torch.utils.data.DataLoader(
                Transformed(FileItems(samples) if samples else splits.train, self._per_sample()),
                batch_sampler=self.batch_sampler,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=device.type == "cuda",
            )

    def _per_sample(self) -> Views:
        info = self.splits.info
        return multi_view(self.p.augment, self.size, info.mean, info.std, self.views)

    @property
    def path(self) -> str:
        """Where augmentation runs, as ``run_started`` reports it."""
        if not self.batched:
            return "cpu"
        if self.device.type != "cuda":
            return "batched-cpu"
        return "gpu" if self.resident else "gpu-streamed"

    def epoch(self, epoch: int, start: int, stop: int) -> Iterator[tuple[list[Tensor], Tensor]]:
        """Micro-batches ``start:stop`` of ``epoch``: (views on the device, labels)."""
        dev = self.device
        if self.batched:
            for idx in self.sampler.epoch(epoch)[start:stop]:
                idx = idx.to(self.train_images.device, non_blocking=True)
                imgs = self.train_images[idx].to(dev, non_blocking=True)
                yield (self.augment(imgs, generator=self.generator),
                       self.train_labels[idx].to(dev, non_blocking=True))
        else:
            self.batch_sampler.set_epoch(epoch, start, stop)
            for views, y in self.loader:
                yield [v.to(dev, non_blocking=True) for v in views], y.to(dev, non_blocking=True)

    def val_views(self, idx: Tensor, batch_size: int) -> Iterator[list[Tensor]]:
        """Views of the held-out images ``idx`` in batches of at least 2, the same at every
        validation (a fixed seed)."""
        seed = self.p.train.seed + 7
        if self.batched:
            data = self.splits.tensors("val")
            gen = torch.Generator(device=self.device).manual_seed(seed)
            for chunk in idx.split(batch_size):
                if len(chunk) >= 2:
                    yield self.augment(data.images[chunk].to(self.device), generator=gen)
            return
        dataset = torch.utils.data.Subset(Transformed(self.splits.val, self._per_sample()),
                                          idx.tolist())
        with torch.random.fork_rng(devices=[]):  # the transforms use the CPU generator alone
            torch.default_generator.manual_seed(seed)
            for views, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
                if len(views[0]) >= 2:
                    yield [v.to(self.device) for v in views]
