"""ImageNet input throughput: sslterm's data paths against lightly's and timm's pipelines.

    python benchmarks/bench_imagenet_input.py [--workers 2] [--n 256] [--rounds 3]
    python benchmarks/bench_imagenet_input.py --batched [--device cuda] [--n 8192] [--batch 256]

Every side reads the same ImageNet-like JPEG files, which the script makes (``--photos
DIR`` takes your own instead): about 500 x 375 (a third portrait), quality 90, cut at
random places, scales and hues out of the sample photograph matplotlib ships (``--source
PHOTO`` where matplotlib is missing), with a little sensor-like noise, so each file is a
different photograph-like image.

Per sample (default): images/s of each view plan -- SimCLR, 2 x 224 px; DINO, 2 x 224 + 6 x 96 px
-- through a DataLoader with ``--workers`` single-threaded worker processes, the same
settings for every side:

- sslterm: the per-sample path (``data.decode = "workers"``): ``Views`` on file paths,
  ``SampleView`` per view (draft decoding, PIL ops on uint8, PIL blur), ImageNet recipe
  (``color_strength`` 1.0 with blur for SimCLR; 0.5 with blur for DINO, as
  profiles/cifar10-dino.toml's solo-learn recipe);
- lightly: ``SimCLRTransform()`` / ``DINOTransform()`` with their defaults (the same
  recipes: jitter 0.8 s / 0.2 s hue, grayscale 0.2, blur; DINO's per-view blur 1.0 / 0.1 /
  0.5 and solarisation) on PIL images decoded by torchvision's default loader;
- timm: ``create_transform(size, is_training=True)`` per view (crop, flip, jitter 0.4 without
  hue, grayscale or blur: a lighter recipe), the local views with DINO's local crop scale;
- torchvision v2 (before): sslterm's per-sample path before SampleView, the torchvision
  reference pipeline (``simclr_view``, v2.GaussianBlur) on PIL-decoded images.

Per core = images/s / workers. The sides run in alternating rounds in the same window and
the best and the median round are reported, with the ratios sslterm / lightly and
sslterm / timm.

Batched (``--batched``, on ``--device``, cuda by default): the batched decode path as
``data.decode = "batched"`` runs it --
workers read file bytes, the main process decodes each batch with nvJPEG, pads it and
augments it with BatchAugment on the GPU -- as images/s for each plan, plus decoding alone
and augmentation alone (of an already decoded batch). benchmarks/gpu_session.sh runs it.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import default_loader

from sslterm.data.augment import BatchAugment
from sslterm.data.datasets import FileItems, Transformed
from sslterm.data.decode import EncodedFiles, collate_encoded, decode_images, pad_batch, shrink
from sslterm.data.registry import IMAGENET_MEAN, IMAGENET_STD
from sslterm.data.transforms import multi_view, simclr_view
from sslterm.data.views import View, resolve_views, view_config
from sslterm.profile.schema import AugmentConfig

SIZE, LOCAL_SIZE = 224, 96
GLOBAL_SCALE, LOCAL_SCALE = (0.4, 1.0), (0.05, 0.4)  # DINO's, as lightly and the paper
PLANS: dict[str, tuple[View, ...]] = {
    "SimCLR 2 x 224": (View(),) * 2,
    "DINO 2 x 224 + 6 x 96": ((View(scale=GLOBAL_SCALE),) * 2
                              + (View(size=LOCAL_SIZE, scale=LOCAL_SCALE),) * 6),
}
RECIPES = {  # sslterm's augmentation for each plan (see the module docstring)
    "SimCLR 2 x 224": AugmentConfig(color_strength=1.0, blur=True),
    "DINO 2 x 224 + 6 x 96": AugmentConfig(color_strength=0.5, blur=True),
}


# --- ImageNet-like JPEGs -------------------------------------------------------------------


def sample_photograph(path: Path | None) -> Image.Image:
    """``path``, else the photograph matplotlib ships (grace_hopper.jpg, 512 x 600)."""
    if path is None:
        try:
            import matplotlib.cbook
        except ImportError:
            raise SystemExit("no matplotlib here: pass --source PHOTO.jpg (e.g. a copy of "
                             "matplotlib's mpl-data/sample_data/grace_hopper.jpg)") from None
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with open(path, "rb") as f:
        return Image.open(io.BytesIO(f.read())).convert("RGB")


def make_jpegs(folder: Path, n: int, source: Image.Image, seed: int = 0) -> list[Path]:
    """n different 500 x 375 (or 375 x 500) quality-90 JPEGs cut from ``source``."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        portrait = rng.random() < 1 / 3
        out = (375, 500) if portrait else (500, 375)
        aspect = out[0] / out[1]
        area = rng.uniform(0.3, 1.0) * source.width * source.height
        w = min(source.width, int(round((area * aspect) ** 0.5)))
        h = min(source.height, int(round(w / aspect)))
        left = int(rng.integers(0, source.width - w + 1))
        top = int(rng.integers(0, source.height - h + 1))
        image = source.crop((left, top, left + w, top + h)).resize(out, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] += np.uint8(rng.integers(0, 256))  # another hue: another photograph
        pixels = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.float32)
        pixels += rng.normal(0.0, 2.0, pixels.shape)  # sensor noise, as photographs have
        path = folder / f"{i:05d}.JPEG"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


# --- the CPU sides ---------------------------------------------------------------------------


class Decoded(Dataset):
    """torchvision's ImageFolder way: PIL decode and RGB conversion, then the transform."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[object, int]:
        return self.transform(default_loader(str(self.paths[index]))), 0


class EachView:
    """One draw of each per-view transform (timm has no multi-view transform of its own)."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]


def sides(plan: str, paths: Sequence[Path]) -> dict[str, Dataset]:
    from lightly.transforms import DINOTransform, SimCLRTransform
    from timm.data import create_transform

    views = PLANS[plan]
    ours = Transformed(FileItems([(str(p), 0) for p in paths]),
                       multi_view(RECIPES[plan], SIZE, IMAGENET_MEAN, IMAGENET_STD, views))
    dino = plan.startswith("DINO")
    lightly = DINOTransform() if dino else SimCLRTransform()
    timm_views = [create_transform(v.size or SIZE, is_training=True,
                                   scale=v.scale or (0.08, 1.0)) for v in views]
    before = [simclr_view(view_config(RECIPES[plan], v), v.size, IMAGENET_MEAN, IMAGENET_STD)
              for v in resolve_views(views, SIZE, RECIPES[plan].crop_scale)]
    return {"sslterm per-sample": ours, "lightly": Decoded(paths, lightly),
            "timm create_transform": Decoded(paths, EachView(timm_views)),
            "torchvision v2 (before)": Decoded(paths, EachView(before))}


def loader_runner(dataset: Dataset, workers: int, batch: int) -> Callable[[], None]:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=2 if workers else None)

    def run() -> None:
        for _ in loader:
            pass

    return run


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cpu_benchmark(args: argparse.Namespace, paths: list[Path]) -> None:
    torch.set_num_threads(1)
    print(f"{args.workers} single-threaded DataLoader workers, batch {args.batch}, "
          f"{args.rounds} alternating rounds of {len(paths)} images; per core = img/s / "
          f"{args.workers}")
    for plan in PLANS:
        runners = {name: loader_runner(ds, args.workers, args.batch)
                   for name, ds in sides(plan, paths).items()}
        for run in runners.values():
            run()  # warm-up: workers started, files in the page cache
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                seconds[name].append(timed(run))
        print(f"\n{plan}")
        rates = {name: (len(paths) / min(s), len(paths) / statistics.median(s))
                 for name, s in seconds.items()}
        for name, (best, median) in rates.items():
            print(f"  {name:24s}: {best:7.1f} img/s best ({best / args.workers:6.1f} per core), "
                  f"{median:7.1f} median")
        ours = rates["sslterm per-sample"]
        for other in ("lightly", "timm create_transform", "torchvision v2 (before)"):
            print(f"  {'sslterm / ' + other:34s}: {ours[0] / rates[other][0]:5.2f}x best, "
                  f"{ours[1] / rates[other][1]:5.2f}x median")


# --- the GPU side ----------------------------------------------------------------------------


class Cycled(Dataset):
    """``n`` items cycling over a dataset (fewer unique files than timed images)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> object:
        return self.dataset[index % len(self.dataset)]  # type: ignore[arg-type]


def gpu_benchmark(args: argparse.Namespace, paths: list[Path]) -> None:
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer sets on a GPU
    files = Cycled(EncodedFiles([(str(p), 0) for p in paths]), args.n)
    loader = DataLoader(files, batch_size=args.batch, num_workers=args.workers,
                        collate_fn=collate_encoded, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if args.workers else None)
    batches = list(loader)  # decoding is timed below, reading files is the workers' part
    print(f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}),"
          f" {args.n} images in batches of {args.batch} ({len(paths)} unique files), "
          f"{args.workers} reader workers; best and median of {args.rounds} rounds")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def rate(run: Callable[[], None]) -> tuple[float, float]:
        run()  # warm-up: nvJPEG handles, cuBLAS, the caching allocator
        times = []
        for _ in range(args.rounds):
            sync()
            start = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - start)
        return args.n / min(times), args.n / statistics.median(times)

    def decode_all() -> None:
        for batch in batches:
            pad_batch([shrink(im, 4 * SIZE) for im in decode_images(batch, device)])

    def show(name: str, rates: tuple[float, float]) -> None:
        print(f"  {name:46s}: {rates[0]:9,.0f} img/s best, {rates[1]:9,.0f} median")

    show("decode + pad (batched decode_jpeg)", rate(decode_all))
    one, one_sizes = pad_batch([shrink(im, 4 * SIZE) for im in decode_images(batches[0], device)])
    for plan, views in PLANS.items():
        aug = BatchAugment(RECIPES[plan], SIZE, IMAGENET_MEAN, IMAGENET_STD, views).to(device)
        gen = torch.Generator(device=device).manual_seed(0)

        def augment_only(aug: BatchAugment = aug, gen: torch.Generator = gen) -> None:
            for _ in batches:
                aug(one, gen, one_sizes)

        def end_to_end(aug: BatchAugment = aug, gen: torch.Generator = gen) -> None:
            for batch in loader:
                images = [shrink(im, 4 * SIZE) for im in decode_images(batch, device)]
                padded, sizes = pad_batch(images)
                aug(padded, gen, sizes)

        show(f"{plan}: augment only", rate(augment_only))
        show(f"{plan}: read + decode + augment", rate(end_to_end))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batched", action="store_true", help="time the batched decode path "
                        "on --device instead of the per-sample sides")
    parser.add_argument("--device", default="cuda", help="--batched: where to decode and "
                        "augment")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--n", type=int, help="images per round (256; --batched 8192)")
    parser.add_argument("--unique", type=int, default=512, help="distinct JPEGs to make")
    parser.add_argument("--batch", type=int, help="batch size (64; --batched 256)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side")
    parser.add_argument("--photos", type=Path, help="a folder of your own JPEGs instead")
    parser.add_argument("--source", type=Path, help="the photograph the JPEGs are cut from "
                        "(default: matplotlib's sample photograph)")
    args = parser.parse_args()
    gpu = args.batched
    args.n = args.n or (8192 if gpu else 256)
    args.batch = args.batch or (256 if gpu else 64)

    with tempfile.TemporaryDirectory() as tmp:
        if args.photos:
            paths = sorted(args.photos.rglob("*.JPEG")) + sorted(args.photos.rglob("*.jpg"))
            paths = paths[: args.n if not gpu else args.unique]
            source = f"{len(paths)} JPEGs from {args.photos}"
        else:
            count = args.n if not gpu else min(args.unique, args.n)
            paths = make_jpegs(Path(tmp), count, sample_photograph(args.source))
            source = f"{len(paths)} generated ImageNet-like JPEGs"
        kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        sizes = {Image.open(p).size for p in paths[:50]}
        print(f"torch {torch.__version__}; {source}, mean {kb:.0f} KB, e.g. "
              f"{', '.join(f'{w}x{h}' for w, h in sorted(sizes)[:3])}")
        (gpu_benchmark if gpu else cpu_benchmark)(args, paths)


if __name__ == "__main__":
    main()
