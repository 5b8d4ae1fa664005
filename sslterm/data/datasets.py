"""The built-in datasets: CIFAR-10/100, SVHN, ImageNet (+ SCAN subsets), image folders, synthetic.

Each builder checks what is on disk first and raises a one-line ``UserError`` that names
the exact path to fill, because a torchvision traceback ("Dataset not found or corrupted")
does not tell a user where the files should go.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import os
import socket
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import CIFAR10, CIFAR100, SVHN, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

from sslterm.data.cache import ImageTensors, decode_files, file_fingerprint, hwc_to_tensors
from sslterm.data.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Builder,
    DatasetInfo,
    DataShape,
    OfficialSplit,
    Source,
    register_dataset,
)
from sslterm.data.subsets import scan_class_list
from sslterm.errors import UserError
from sslterm.profile.schema import SMALL_DATASET_SIZE, DataConfig

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
IMAGENET_SIZE = 224
SMALL_IMAGE_MAX = 64  # image folders up to this size go into the tensor cache
# Per socket operation, not for the whole download: torchvision's urlopen has no timeout.
DOWNLOAD_TIMEOUT_S = 30.0
SYNTHETIC_VERSION = 1  # bump when the generator changes, so old caches are not reused

RGB = tuple[float, float, float]
SPLITS: tuple[OfficialSplit, OfficialSplit] = ("train", "test")


# ---------------------------------------------------------------- generic dataset helpers


class TensorImageDataset(Dataset):
    """``ImageTensors`` as a dataset of ``(PIL RGB image, int label)``, like the file-backed ones."""

    def __init__(self, tensors: ImageTensors) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        hwc = self.tensors.images[index].permute(1, 2, 0).numpy()
        return Image.fromarray(hwc), int(self.tensors.labels[index])


class Transformed(Dataset):
    """Apply ``transform`` to the image of every item (``Subset`` has no transform of its own)."""

    def __init__(self, dataset: Dataset, transform: Callable[[Image.Image], object]) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[object, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


class Seeded(Transformed):
    """``Transformed`` whose items are ``(index, seed)``: the transform draws from a CPU
    stream seeded with ``seed`` (torchvision's transforms take torch's global generator,
    which is forked, so the caller's random state is left as it was)."""

    def __getitem__(self, item: tuple[int, int]) -> tuple[object, int]:  # type: ignore[override]
        index, seed = item
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


def file_samples(dataset: Dataset) -> list[tuple[str, int]] | None:
    """``(path, label)`` of every item of a folder dataset (or a ``Subset`` of one), in item
    order: for the paths that read the files themselves (decoding at reduced size, or on
    the device). None for datasets held in memory (CIFAR, SVHN, synthetic)."""
    if isinstance(dataset, Subset):
        inner = file_samples(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    if isinstance(dataset, ImageFolder):
        return list(dataset.samples)
    return None


class FileItems(Dataset):
    """``(path, label)`` items: a per-sample transform that opens the file itself."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.samples[index]


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser().absolute()


# ---------------------------------------------------------------- torchvision: CIFAR, SVHN


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _open_torchvision(
    name: str,
    root: Path,
    files: dict[OfficialSplit, list[str]],
    where: str,
    make: Callable[[OfficialSplit, bool], Dataset],
    download: bool,
) -> dict[OfficialSplit, Dataset]:
    """Open both splits, downloading missing files if allowed; every failure is a UserError.

    ``where`` says how to provide the files by hand (the download URL and target folder).
    """
    every = list(dict.fromkeys(f for fs in files.values() for f in fs))
    missing = [f for f in every if not (root / f).is_file()]
    if missing and not download:
        raise UserError(
            f"{name}: missing {_listing(root, missing)}; {where}, or set data.download = true"
        )
    opened: dict[OfficialSplit, Dataset] = {}
    for split in SPLITS:
        fetch = not all((root / f).is_file() for f in files[split])
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                opened[split] = make(split, fetch)
        except (OSError, RuntimeError, EOFError, tarfile.TarError) as exc:
            if fetch:
                raise UserError(
                    f"{name}: download failed ({_reason(exc)}); {where}, "
                    f"to provide {_listing(root, every)}"
                ) from exc
            raise UserError(
                f"{name}: {_listing(root, files[split])} failed torchvision's md5 check "
                f"(corrupt or partial download); delete them and {where}"
            ) from exc
    return opened


def _listing(root: Path, files: Sequence[str]) -> str:
    """``/root/dir/{a, b}``: exact paths, one folder named once."""
    groups: dict[Path, list[str]] = {}
    for f in files:
        groups.setdefault((root / f).parent, []).append((root / f).name)
    return ", ".join(
        f"{folder}/{names[0]}" if len(names) == 1 else f"{folder}/{{{', '.join(names)}}}"
        for folder, names in groups.items()
    )


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def _cifar(
    cfg: DataConfig, cls: type[CIFAR10], name: str, classes: int, mean: RGB, std: RGB
) -> Source:
    root = _root(cfg)
    base, meta = cls.base_folder, cls.meta["filename"]
    files: dict[OfficialSplit, list[str]] = {
        "train": [f"{base}/{f}" for f, _ in cls.train_list] + [f"{base}/{meta}"],
        "test": [f"{base}/{f}" for f, _ in cls.test_list] + [f"{base}/{meta}"],
    }
    where = f"extract {cls.url} into {root}"
    opened = _open_torchvision(
        name,
        root,
        files,
        where,
        lambda s, dl: cls(str(root), train=s == "train", download=dl),
        cfg.download,
    )
    return Source(
        DatasetInfo(name, classes, cfg.image_size or SMALL_DATASET_SIZE[name], mean, std, small=True),
        opened["train"],
        opened["test"],
        root,
        fingerprint=lambda s: file_fingerprint(root / f for f in files[s]),
        decode=lambda s: hwc_to_tensors(opened[s].data, opened[s].targets),
    )


@register_dataset("cifar10")
def cifar10(cfg: DataConfig, seed: int) -> Source:
    return _cifar(cfg, CIFAR10, "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD)


@register_dataset("cifar100")
def cifar100(cfg: DataConfig, seed: int) -> Source:
    return _cifar(cfg, CIFAR100, "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD)


@register_dataset("svhn")
def svhn(cfg: DataConfig, seed: int) -> Source:
    """SVHN train (73,257) and test; labels 0-9 (torchvision maps the file's 10 to 0)."""
    root = _root(cfg)
    files: dict[OfficialSplit, list[str]] = {s: [SVHN.split_list[s][1]] for s in SPLITS}
    where = f"download {' and '.join(SVHN.split_list[s][0] for s in SPLITS)} into {root}"
    opened = _open_torchvision(
        "svhn",
        root,
        files,
        where,
        lambda s, dl: SVHN(str(root), split=s, download=dl),
        cfg.download,
    )
    info = DatasetInfo("svhn", 10, cfg.image_size or SMALL_DATASET_SIZE["svhn"], SVHN_MEAN,
                       SVHN_STD, small=True)

    def decode(split: OfficialSplit) -> ImageTensors:
        ds = opened[split]  # data is already uint8 [N,3,32,32]
        return ImageTensors(torch.from_numpy(ds.data).contiguous(), torch.as_tensor(ds.labels))

    return Source(
        info,
        opened["train"],
        opened["test"],
        root,
        fingerprint=lambda s: file_fingerprint(root / f for f in files[s]),
        decode=decode,
    )


# ---------------------------------------------------------------- class folders


class ClassFolder(ImageFolder):
    """ImageFolder over a fixed, ordered class list: label = position in ``classes``.

    So a test split gets the labels of the training split (not its own sorted folder
    names), and a SCAN list fixes labels by line, whatever other folders exist.
    """

    def __init__(self, root: str | os.PathLike[str], classes: Sequence[str]) -> None:
        self._fixed_classes = list(classes)
        super().__init__(os.fspath(root))

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        return list(self._fixed_classes), {c: i for i, c in enumerate(self._fixed_classes)}


@dataclass(frozen=True)
class FolderLayout:
    """Where a class-folder dataset's splits are and which classes it has (in label order).

    Found by listing one directory level, so checking it is cheap even for ImageNet.
    """

    name: str
    train_dir: Path
    test_dir: Path
    classes: list[str]
    hint: str  # how the folders should look, for error messages

    def open(self, split: OfficialSplit) -> ClassFolder:
        directory = self.train_dir if split == "train" else self.test_dir
        try:
            return ClassFolder(directory, self.classes)
        except FileNotFoundError as exc:  # a class folder without images
            raise UserError(f"{self.name}: {exc} (in {directory}); {self.hint}") from exc


def _class_dirs(
    name: str, directory: Path, classes: Sequence[str] | None, hint: str, exact: bool = False
) -> list[str]:
    """Check the class subfolders of ``directory``; ``classes=None`` takes them all, sorted.

    ``exact`` also rejects folders not in ``classes`` (a test split with unknown classes).
    """
    if not directory.is_dir():
        raise UserError(f"{name}: folder {directory} not found; {hint}")
    present = sorted(
        e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
    )
    wanted = list(classes) if classes is not None else present
    if not wanted:
        raise UserError(f"{name}: no class folders in {directory}; {hint}")
    missing = [c for c in wanted if c not in set(present)]
    if missing:
        raise UserError(
            f"{name}: {len(missing)} of {len(wanted)} class folders missing in {directory} "
            f"({_few(missing)}); {hint}"
        )
    extra = sorted(set(present) - set(wanted)) if exact else []
    if extra:
        raise UserError(f"{name}: {directory} has classes not in train/ ({_few(extra)}); {hint}")
    return wanted


def _few(items: Sequence[str], limit: int = 5) -> str:
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _folder_source(info: DatasetInfo, root: Path, layout: FolderLayout, size: int) -> Source:
    """Source over the two class folders of ``layout``; cached images are fitted to ``size`` px."""
    folders = {split: layout.open(split) for split in SPLITS}

    def fingerprint(split: OfficialSplit) -> object:
        ds = folders[split]
        return {
            "classes": ds.classes,
            "size": size,
            "files": file_fingerprint(p for p, _ in ds.samples),
        }

    def decode(split: OfficialSplit) -> ImageTensors:
        ds = folders[split]
        return decode_files([p for p, _ in ds.samples], ds.targets, size)

    return Source(info, folders["train"], folders["test"], root, fingerprint, decode)


def _first_image_size(name: str, path: str) -> int:
    """The shorter side of an image folder's stored size: its first training image's."""
    try:
        with Image.open(path) as img:
            return min(img.size)
    except OSError as exc:
        raise UserError(f"{name}: cannot read image {path} ({exc})") from exc


def _first_image(layout: FolderLayout) -> str:
    """The first training image ``ClassFolder`` would list, found by walking only the first
    class folder (a pre-flight must not list a million files)."""
    first = layout.classes[0]
    try:
        return make_dataset(str(layout.train_dir), {first: 0}, extensions=IMG_EXTENSIONS)[0][0]
    except FileNotFoundError as exc:
        raise UserError(f"{layout.name}: {exc} (in {layout.train_dir}); {layout.hint}") from exc


def _count_images(layout: FolderLayout, bound: int) -> int:
    """Training images ``ClassFolder`` would find, counted until ``bound`` is reached."""
    n = 0
    for name in layout.classes:
        for _, _, files in os.walk(layout.train_dir / name, followlinks=True):
            n += sum(has_file_allowed_extension(f, IMG_EXTENSIONS) for f in files)
            if n >= bound:
                return n
    return n


def _folder_shape(layout: FolderLayout, size: int) -> DataShape:
    return DataShape(size, lambda bound: _count_images(layout, bound))


def imagefolder_layout(cfg: DataConfig) -> FolderLayout:
    """``root/train/<class>/`` and ``root/test/<class>/`` (or ``val/``) with the same classes."""
    root = _root(cfg)
    hint = f"expected image files in {root}/train/<class>/ and {root}/test/<class>/ (or val/)"
    classes = _class_dirs("imagefolder", root / "train", None, hint)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if test_dir is None:
        raise UserError(f"imagefolder: no test/ or val/ folder in {root}; {hint}")
    _class_dirs("imagefolder", test_dir, classes, hint, exact=True)
    return FolderLayout("imagefolder", root / "train", test_dir, classes, hint)


def imagefolder_check(cfg: DataConfig) -> DataShape:
    layout = imagefolder_layout(cfg)
    size = cfg.image_size or _first_image_size("imagefolder", _first_image(layout))
    return _folder_shape(layout, size)


@register_dataset("imagefolder", check=imagefolder_check)
def imagefolder(cfg: DataConfig, seed: int) -> Source:
    """Any folder of class subfolders, any image format.

    The stored size is the first training image's (shorter) side; other sizes are fitted
    to it in the cache. Folders of images up to 64 px count as small.
    """
    layout = imagefolder_layout(cfg)
    train = layout.open("train")
    native = _first_image_size("imagefolder", train.samples[0][0])
    info = DatasetInfo(
        "imagefolder",
        len(layout.classes),
        cfg.image_size or native,
        IMAGENET_MEAN,
        IMAGENET_STD,
        small=native <= SMALL_IMAGE_MAX,
    )
    return _folder_source(info, _root(cfg), layout, native)


def _imagenet_hint(root: Path) -> str:
    return f"expected the images as {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG"


def imagenet_layout(cfg: DataConfig) -> FolderLayout:
    """ImageNet train/val class folders (the same wnids in both)."""
    root = _root(cfg)
    hint = _imagenet_hint(root)
    wnids = _class_dirs("imagenet", root / "train", None, hint)
    _class_dirs("imagenet", root / "val", wnids, hint, exact=True)
    return FolderLayout("imagenet", root / "train", root / "val", wnids, hint)


def _subset_layout(n: int) -> Callable[[DataConfig], FolderLayout]:
    def layout(cfg: DataConfig) -> FolderLayout:
        name, root = f"imagenet{n}", _root(cfg)
        wnids = scan_class_list(n, cfg.class_list)
        hint = _imagenet_hint(root)
        for split in ("train", "val"):
            _class_dirs(name, root / split, wnids, hint)
        return FolderLayout(name, root / "train", root / "val", wnids, hint)

    return layout


def _imagenet_builder(layout: Callable[[DataConfig], FolderLayout]) -> Builder:
    def build(cfg: DataConfig, seed: int) -> Source:
        found = layout(cfg)
        size = cfg.image_size or IMAGENET_SIZE
        info = DatasetInfo(
            found.name, len(found.classes), size, IMAGENET_MEAN, IMAGENET_STD, small=False
        )
        return _folder_source(info, _root(cfg), found, IMAGENET_SIZE)

    return build


# ImageNet: the official val split is the test split. The SCAN subsets keep the classes of
# their list, labelled in list order.
def _imagenet_check(layout: Callable[[DataConfig], FolderLayout]) -> Callable[[DataConfig], DataShape]:
    return lambda cfg: _folder_shape(layout(cfg), cfg.image_size or IMAGENET_SIZE)


register_dataset("imagenet", check=_imagenet_check(imagenet_layout))(
    _imagenet_builder(imagenet_layout))
for _n in (50, 100, 200):
    _layout = _subset_layout(_n)
    register_dataset(f"imagenet{_n}", check=_imagenet_check(_layout))(_imagenet_builder(_layout))


# ---------------------------------------------------------------- synthetic


def _synthetic_shape(cfg: DataConfig) -> DataShape:
    """Generating cannot fail: the shape is in the profile."""
    return DataShape(cfg.image_size or SMALL_DATASET_SIZE["synthetic"], lambda _: cfg.synthetic_size)


@register_dataset("synthetic", check=_synthetic_shape)
def synthetic(cfg: DataConfig, seed: int) -> Source:
    """Generated images for smoke runs and tests: ``synthetic_size`` train, a quarter as many test."""
    size, classes = cfg.image_size or SMALL_DATASET_SIZE["synthetic"], cfg.synthetic_classes
    counts = {"train": cfg.synthetic_size, "test": max(cfg.synthetic_size // 4, classes)}
    data = {s: generate_synthetic(counts[s], classes, size, seed, s) for s in SPLITS}
    sample = data["train"].images[:4096].float().div_(255)  # labels are shuffled: representative
    std, mean = (tuple(t.tolist()) for t in torch.std_mean(sample, dim=(0, 2, 3)))
    info = DatasetInfo("synthetic", classes, size, mean, std, small=True)  # type: ignore[arg-type]
    params = {"v": SYNTHETIC_VERSION, "seed": seed, "classes": classes, "size": size}
    return Source(
        info,
        TensorImageDataset(data["train"]),
        TensorImageDataset(data["test"]),
        _root(cfg),
        fingerprint=lambda s: {**params, "split": s, "n": counts[s]},
        decode=data.__getitem__,
    )


def _derive_seed(seed: int, split: str) -> int:
    """Independent streams per (seed, split), with no collisions between nearby seeds."""
    digest = hashlib.sha256(f"sslterm-synthetic:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _box(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.maximum(dx.abs(), dy.abs()) < r


def _waves(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.sin(d * (3 * torch.pi) / r)


# The class picks the shape (class % 8) and a hue; together they make the label learnable.
_SHAPES: list[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = [
    lambda dx, dy, r: dx**2 + dy**2 < r**2,  # disc
    lambda dx, dy, r: _box(dx, dy, 0.85 * r),  # square
    lambda dx, dy, r: ((dx**2 + dy**2) < r**2) & ((dx**2 + dy**2) > (0.55 * r) ** 2),  # ring
    lambda dx, dy, r: dx.abs() + dy.abs() < 1.2 * r,  # diamond
    lambda dx, dy, r: _box(dx, dy, r) & (_waves(dy, r) > 0),  # horizontal stripes
    lambda dx, dy, r: _box(dx, dy, r) & (_waves(dx, r) > 0),  # vertical stripes
    lambda dx, dy, r: _box(dx, dy, r) & ((dx.abs() < r / 3) | (dy.abs() < r / 3)),  # cross
    lambda dx, dy, r: _box(dx, dy, r) & (_waves(dx, r) * _waves(dy, r) > 0),  # checker
]


def _class_colours(classes: int) -> torch.Tensor:
    hues = [(c * 0.618034) % 1.0 for c in range(classes)]  # golden-ratio steps spread hues
    return torch.tensor([colorsys.hsv_to_rgb(h, 0.85, 0.95) for h in hues])


def generate_synthetic(n: int, classes: int, size: int, seed: int, split: str) -> ImageTensors:
    """Coloured shapes on noisy backgrounds, balanced over classes, fixed by (seed, split).

    Position, scale, background and noise vary per image, so the task is learnable but
    not a lookup of a single pixel.
    """
    gen = torch.Generator().manual_seed(_derive_seed(seed, split))
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]
    colours = _class_colours(classes)
    chunks = [_draw(labels[i : i + 2048], colours, size, gen) for i in range(0, n, 2048)]
    return ImageTensors(torch.cat(chunks), labels)


def _draw(
    labels: torch.Tensor, colours: torch.Tensor, size: int, gen: torch.Generator
) -> torch.Tensor:
    n = len(labels)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    coords = (torch.arange(size) + 0.5) / size
    cx, cy = 0.3 + 0.4 * rand(n, 1, 1), 0.3 + 0.4 * rand(n, 1, 1)
    dx, dy = coords.view(1, 1, size) - cx, coords.view(1, size, 1) - cy
    r = 0.18 + 0.14 * rand(n, 1, 1)
    mask = torch.zeros(n, size, size)
    kinds = labels % len(_SHAPES)
    for k, shape in enumerate(_SHAPES):
        sel = kinds == k
        if sel.any():
            mask[sel] = shape(dx[sel], dy[sel], r[sel]).float()
    background = 0.45 * rand(n, 3, 1, 1)
    foreground = colours[labels].view(n, 3, 1, 1) * (0.75 + 0.25 * rand(n, 1, 1, 1))
    noise = 0.06 * torch.randn(n, 3, size, size, generator=gen)
    image = background + (foreground - background) * mask.unsqueeze(1) + noise
    return image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
