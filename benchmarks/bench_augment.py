"""Augmentation throughput: batched BatchAugment on CPU tensors vs torchvision per sample.

    python benchmarks/bench_augment.py [--n 4096] [--threads 2] [--batch 512] [--data DIR]

Both sides produce the same thing on the same cores: two normalised SimCLR views
(CIFAR recipe, AugmentConfig defaults) of every image at 32 px.

- threads = 1: both single-threaded in this process.
- threads = T > 1: both in a DataLoader with T worker processes, one torch thread
  each (DataLoader's default): torchvision per sample, collated in batches of 256,
  against BatchAugment on whole batches inside the workers. Same process structure,
  only the augmentation differs. BatchAugment in this process with T intra-op threads
  is printed too, for information: on a shared, oversubscribed machine its many
  short OpenMP regions wait on descheduled threads, so that number swings with load.

Images are decoded once up front for both: ``--data`` is a folder of the extracted
``cifar10-jpeg.tar.gz`` (``DIR/train/<class>/*.jpg``), else CIFAR-like images are
generated. The torchvision side wraps arrays with Image.fromarray per item, as
torchvision's CIFAR10 dataset does. Shared machines are noisy: the sides run in
alternating rounds, and the best and the median round are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sslterm.data.augment import BatchAugment
from sslterm.data.transforms import Views, multi_view
from sslterm.data.views import View
from sslterm.profile.schema import AugmentConfig

SIZE = 32
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TORCHVISION_BATCH = 256


def load_jpegs(root: Path, n: int) -> np.ndarray:
    """n random training images of the extracted CIFAR-10 JPEG folder, [n, 32, 32, 3] uint8."""
    files = sorted((root / "train").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no train/<class>/*.jpg under {root}")
    picks = np.random.default_rng(0).choice(len(files), size=min(n, len(files)), replace=False)
    return np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in picks])


def generated_images(n: int) -> np.ndarray:
    """CIFAR-like stand-ins: smooth random colour fields with edges and pixel noise."""
    rng = torch.Generator().manual_seed(0)
    coarse = torch.rand((n, 3, 4, 4), generator=rng)
    smooth = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")
    blocks = torch.nn.functional.interpolate(
        torch.rand((n, 3, 8, 8), generator=rng), size=(SIZE, SIZE)
    )
    noise = torch.rand((n, 3, SIZE, SIZE), generator=rng)
    images = 0.6 * smooth + 0.3 * blocks + 0.1 * noise
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class PerSample(Dataset):
    """torchvision-style dataset: one PIL image through the per-sample pipeline per item."""

    def __init__(self, images: np.ndarray, transform: Views) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(Image.fromarray(self.images[index]))


class PerBatch(Dataset):
    """One whole batch through BatchAugment per item, its own seeded generator each."""

    def __init__(self, images: torch.Tensor, batch: int, augment: BatchAugment) -> None:
        self.images = images
        self.batch = batch
        self.augment = augment

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        chunk = self.images[index * self.batch : (index + 1) * self.batch]
        return self.augment(chunk, generator)


def loader_runner(dataset: Dataset, workers: int, batch_size: int | None) -> Callable[[], None]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )

    def run() -> None:
        for _ in loader:
            pass

    return run


def in_process_runner(dataset: PerBatch) -> Callable[[], None]:
    def run() -> None:
        for index in range(len(dataset)):
            dataset[index]

    return run


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096, help="images per round (2 views each)")
    parser.add_argument("--threads", type=int, default=2, help="cores for each side")
    parser.add_argument("--batch", type=int, default=512, help="BatchAugment batch size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each side")
    parser.add_argument("--data", type=Path, help="extracted cifar10-jpeg folder")
    args = parser.parse_args()

    images = load_jpegs(args.data, args.n) if args.data else generated_images(args.n)
    source = f"CIFAR-10 JPEGs from {args.data}" if args.data else "generated CIFAR-like images"
    cfg = AugmentConfig()
    per_sample = PerSample(images, multi_view(cfg, SIZE, MEAN, STD, (View(), View())))
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    per_batch = PerBatch(tensor, args.batch, BatchAugment(cfg, SIZE, MEAN, STD))

    if args.threads == 1:
        torch.set_num_threads(1)
        mode = "both single-threaded in this process"
        runners = {
            "torchvision per-sample": loader_runner(per_sample, 0, TORCHVISION_BATCH),
            "BatchAugment": in_process_runner(per_batch),
        }
    else:
        mode = f"both in a DataLoader with {args.threads} single-threaded workers"
        runners = {
            "torchvision per-sample": loader_runner(per_sample, args.threads, TORCHVISION_BATCH),
            "BatchAugment": loader_runner(per_batch, args.threads, None),
            f"(BatchAugment, {args.threads} intra-op threads)": in_process_runner(per_batch),
        }
        torch.set_num_threads(args.threads)  # for the in-process line; workers set one

    print(f"torch {torch.__version__}, {SIZE} px, torchvision v2 pipeline on PIL images")
    print(f"{len(images)} {source}, 2 views each; same cores: {mode}")
    print(f"{args.rounds} alternating rounds; BatchAugment batch {args.batch}")
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run()  # warm-up: workers started, caches filled
    for _ in range(args.rounds):
        for name, run in runners.items():
            seconds[name].append(timed(run))

    views = 2 * len(images)
    rates = {name: (views / min(s), views / statistics.median(s)) for name, s in seconds.items()}
    for name, (best, median) in rates.items():
        print(f"{name:34s}: {best:9,.0f} views/s best, {median:9,.0f} median")
    (tv_best, tv_median), (ours_best, ours_median) = list(rates.values())[:2]
    print(
        f"{'ratio BatchAugment / torchvision':34s}: {ours_best / tv_best:9.1f}x best, "
        f"{ours_median / tv_median:9.1f}x median"
    )


if __name__ == "__main__":
    main()
