"""The training data path: augmented views and labels of this rank's batches.

Three paths (``choose_path``): small images come from the uint8 tensor cache and are
augmented in batch on the device (:class:`BatchAugment`); large ones are either decoded in
batches on the device from file bytes the DataLoader workers read (``sslterm.data.decode``,
then the same BatchAugment), or decoded and augmented per sample in the workers
(``transforms.SampleView``). Every way a batch holds the views the method asks for, in its
order, each at its own size and crop scale (multi-crop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor

from sslterm.data.augment import BatchAugment
from sslterm.data.cache import ImageRows, ImageTensors
from sslterm.data.datasets import FileItems, Seeded, file_samples
from sslterm.data.decode import EncodedFiles, collate_encoded, decode_images, pad_batch, shrink
from sslterm.data.registry import Splits
from sslterm.data.sampler import ShardedBatches, ShardedBatchSampler
from sslterm.data.streams import stream_seed
from sslterm.data.transforms import Views, multi_view
from sslterm.data.views import View, resolve_views
from sslterm.errors import TrainingError, UserError
from sslterm.profile.schema import DataConfig, Profile


def uses_tensor_cache(data: DataConfig, small: bool) -> bool:
    """Whether training (and evaluation) images come from the uint8 tensor cache: always for
    ``data.augment = "gpu"``, for "auto" with small images and the cache on (unless
    ``data.decode = "batched"`` asks for the files)."""
    return data.augment == "gpu" or (
        data.augment == "auto" and small and data.cache and data.decode != "batched"
    )


def choose_path(data: DataConfig, small: bool, device: torch.device,
                has_files: bool) -> tuple[str, str]:
    """Which training data path runs, and why in words (for ``run_started``): "cache"
    (tensor cache + BatchAugment), "decode" (file bytes decoded in batches on the device +
    BatchAugment) or "workers" (per-sample decoding and augmentation in DataLoader workers).
    """
    if uses_tensor_cache(data, small):
        return "cache", ("data.augment = 'gpu'" if data.augment == "gpu"
                         else "small images, cached as a uint8 tensor")
    outside = "large images" if not small else "images outside the cache (data.cache = false)"
    if data.augment == "cpu":
        return "workers", "data.augment = 'cpu'"
    if not has_files:
        return "workers", f"{outside}, held in memory (no files to decode in batch)"
    if data.decode == "batched":
        return "decode", f"{outside}, data.decode = 'batched'"
    if data.decode == "workers":
        return "workers", f"{outside}, data.decode = 'workers'"
    if device.type == "cuda":
        return "decode", f"{outside} on a GPU (data.decode = 'auto')"
    return "workers", f"{outside} on a CPU (data.decode = 'auto')"


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
            self.views = resolve_views(views, size, p.augment.crop_scale, p.augment.views.longest())
        except ValueError as e:
            raise TrainingError(f"the method's views: {e}") from None
        self.sampler, self.device, self.rank = sampler, device, rank
        info, a = splits.info, p.augment
        samples = file_samples(splits.train)
        kind, self.reason = choose_path(p.data, info.small, device, samples is not None)
        self.batched, self.decode = kind == "cache", kind == "decode"
        self.resident = False
        if self.batched:
            with main_first():  # decode once; the other ranks map the cache
                rows = splits.tensors("train")
            if device.type == "cuda":
                free, nbytes = torch.cuda.mem_get_info(device)[0], rows.nbytes
                if p.data.augment == "gpu" and nbytes > free:
                    raise UserError(
                        f"data.augment: 'gpu' keeps the {nbytes / 2**30:.1f} GiB of cached "
                        f"images on the GPU, which has {free / 2**30:.1f} GiB free; use 'auto'"
                    )
                self.resident = keep_resident(p.data.augment, nbytes, free)
                if not self.resident:
                    self.reason += ", copied per batch (more than half the free GPU memory)"
            # on the GPU a copy of the rows; on the host the mapped cache, gathered per batch
            self.train: ImageTensors | ImageRows = rows.to(device) if self.resident else rows
        if self.batched or self.decode:
            self.augment = BatchAugment(a, size, info.mean, info.std, self.views).to(device)
            self.generator = torch.Generator(device=device)
        if not self.batched:
            # per-sample: each image its own stream; decode: the batch's, as on the cache path
            self.batch_sampler = ShardedBatchSampler(sampler, None if self.decode else p.train.seed)
            workers = p.data.num_workers
            if self.decode:  # workers read bytes; see sslterm.data.decode
                dataset: torch.utils.data.Dataset = EncodedFiles(samples or [])
                # images larger than this are reduced before padding into one batch
                self.max_side = 4 * max(v.size for v in self.views)
            else:  # a path lets the workers decode JPEGs at reduced size (draft)
                dataset = Seeded(FileItems(samples) if samples else splits.train,
                                 self._per_sample())
            self.loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=self.batch_sampler,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=device.type == "cuda",
                collate_fn=collate_encoded if self.decode else None,
            )

    def _per_sample(self) -> Views:
        info = self.splits.info
        return multi_view(self.p.augment, self.size, info.mean, info.std, self.views)

    @property
    def path(self) -> str:
        """Where augmentation runs, as ``run_started`` reports it (``reason`` says why)."""
        if self.decode:
            return f"decode-{'gpu' if self.device.type == 'cuda' else 'cpu'}"
        if not self.batched:
            return "cpu"
        if self.device.type != "cuda":
            return "batched-cpu"
        return "gpu" if self.resident else "gpu-streamed"

    def seed_stream(self, epoch: int, micro: int) -> None:
        """Seed the batched augmentation with this rank's stream for micro-batch ``micro`` of
        ``epoch`` (:mod:`sslterm.data.streams`): a resume draws what the whole run drew."""
        self.generator.manual_seed(stream_seed(self.p.train.seed, self.rank, epoch, micro))

    def epoch(self, epoch: int, start: int, stop: int) -> Iterator[tuple[list[Tensor], Tensor]]:
        """Micro-batches ``start:stop`` of ``epoch``: (views on the device, labels)."""
        dev = self.device
        if self.batched:
            data, pin = self.train, dev.type == "cuda"  # pinned: the copies do not wait
            for micro, idx in enumerate(self.sampler.epoch(epoch)[start:stop], start):
                self.seed_stream(epoch, micro)
                idx = (idx.pin_memory() if pin else idx).to(data.labels.device, non_blocking=True)
                imgs, labels = data.take(idx), data.labels[idx]
                if pin and not imgs.is_cuda:  # gpu-streamed: gathered on the host
                    imgs, labels = imgs.pin_memory(), labels.pin_memory()
                yield (self.augment(imgs.to(dev, non_blocking=True), generator=self.generator),
                       labels.to(dev, non_blocking=True))
        elif self.decode:
            self.batch_sampler.set_epoch(epoch, start, stop)
            for micro, batch in enumerate(self.loader, start):
                self.seed_stream(epoch, micro)
                images = [shrink(im, self.max_side) for im in decode_images(batch, dev)]
                padded, sizes = pad_batch(images)
                yield (self.augment(padded, generator=self.generator, sizes=sizes),
                       batch.labels.to(dev, non_blocking=True))
        else:
            self.batch_sampler.set_epoch(epoch, start, stop)
            for views, y in self.loader:
                yield [v.to(dev, non_blocking=True) for v in views], y.to(dev, non_blocking=True)

    def val_views(self, idx: Tensor, batch_size: int) -> Iterator[list[Tensor]]:
        """Views of the held-out images ``idx`` in batches of at least 2, the same at every
        validation (a fixed seed), made one batch at a time. The per-sample path draws in
        ``data.num_workers`` workers, each image's views fixed by (seed, its index), so they do
        not depend on the workers, the batches or the ranks."""
        seed = self.p.train.seed + 7
        if self.batched:
            data = self.splits.tensors("val")
            gen = torch.Generator(device=self.device).manual_seed(seed)
            for chunk in idx.split(batch_size):
                if len(chunk) >= 2:
                    yield self.augment(data.take(chunk).to(self.device), generator=gen)
            return
        # each held-out image its own stream, named by its index alone
        keys = [(i, stream_seed(seed, i)) for i in idx.tolist()]
        loader = torch.utils.data.DataLoader(
            Seeded(self.splits.val, self._per_sample()), sampler=keys, batch_size=batch_size,
            num_workers=self.p.data.num_workers, pin_memory=self.device.type == "cuda",
        )
        for views, _ in loader:
            if len(views[0]) >= 2:
                batch = [v.to(self.device, non_blocking=True) for v in views]
                del views  # on the CPU, ``batch`` is ``views``: hold it in one name only
                yield batch
                del batch
