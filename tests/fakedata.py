"""Tiny datasets written in the REAL on-disk formats, for tests that read them back through
the real torchvision classes (nothing about reading is mocked).

    write_cifar10(root, n_train, n_test)     root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    write_cifar100(root, n_train, n_test)    root/cifar-100-python/{train,test,meta}
    write_svhn(root, n_train, n_test)        root/{train,test}_32x32.mat (scipy.io.savemat)
    write_image_folder(root, ...)            root/{train,test|val}/<class>/NNNN.png|jpg
    write_imagenet(root, wnids, ...)         root/{train,val}/<wnid>/<wnid>_N.JPEG
    write_class_list(path, wnids)            a SCAN-style '<wnid> <name>' class list

Every writer returns a ``FakeSplits`` with the images (uint8 [N,3,H,W]) and labels in the
order torchvision yields them, so tests can compare decoded pixels exactly (PNG, pickles,
.mat are lossless; JPEG is not).

torchvision checks the md5 of every CIFAR/SVHN file against the real release, which tiny
files cannot match: ``trust_fake_files(monkeypatch, root)`` points torchvision's md5
tables at the written files for the duration of one test.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def all_images(rows) -> torch.Tensor:
    """Every image of ``Splits.tensors(...)`` (rows gathered from the cache), for comparing."""
    return rows.take(torch.arange(len(rows)))


@dataclass
class FakeSplits:
    """What a writer put on disk, in torchvision's reading order."""

    train_images: np.ndarray  # uint8 [N,3,H,W]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


def fake_images(n: int, size: int = 32, seed: int = 0, smooth: bool = False) -> np.ndarray:
    """Random uint8 images [n,3,size,size]; noise is enough to check exact round trips.

    ``smooth`` makes 4x4-pixel blocks instead, which survive JPEG nearly unchanged.
    """
    rng = np.random.default_rng(seed)
    if not smooth:
        return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    blocks = rng.integers(0, 256, (n, 3, -(-size // 4), -(-size // 4)), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(4, axis=2).repeat(4, axis=3)[:, :, :size, :size])


def balanced_labels(n: int, classes: int, seed: int = 0) -> np.ndarray:
    """int64 labels covering the classes as evenly as possible, shuffled."""
    return np.random.default_rng(seed + 1).permutation(np.arange(n) % classes).astype(np.int64)


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(images: np.ndarray, label_key: str, labels: np.ndarray, name: str) -> dict:
    # The release stores each image as one row: 1024 red, 1024 green, 1024 blue bytes.
    return {
        "batch_label": name,
        label_key: labels.tolist(),
        "data": images.reshape(len(images), -1),
        "filenames": [f"{name}_{i}.png" for i in range(len(images))],
    }


def write_cifar10(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> FakeSplits:
    """CIFAR-10 python release: train spread over data_batch_1..5, plus test_batch, batches.meta."""
    base = Path(root) / CIFAR10.base_folder
    out = FakeSplits(
        fake_images(n_train, seed=seed),
        balanced_labels(n_train, 10, seed),
        fake_images(n_test, seed=seed + 100),
        balanced_labels(n_test, 10, seed + 100),
        list(CIFAR10_CLASSES),
    )
    parts = np.array_split(np.arange(n_train), 5)
    for k, idx in enumerate(parts, start=1):
        batch = _cifar_batch(out.train_images[idx], "labels", out.train_labels[idx], f"b{k}")
        _pickle(base / f"data_batch_{k}", batch)
    _pickle(base / "test_batch", _cifar_batch(out.test_images, "labels", out.test_labels, "test"))
    meta = {"label_names": out.classes, "num_cases_per_batch": len(parts[0]), "num_vis": 3072}
    _pickle(base / "batches.meta", meta)
    return out


def write_cifar100(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> FakeSplits:
    """CIFAR-100 python release: train, test (fine + coarse labels) and meta."""
    base = Path(root) / CIFAR100.base_folder
    out = FakeSplits(
        fake_images(n_train, seed=seed),
        balanced_labels(n_train, 100, seed),
        fake_images(n_test, seed=seed + 100),
        balanced_labels(n_test, 100, seed + 100),
        [f"fine_{i:03d}" for i in range(100)],
    )
    for name, images, labels in (
        ("train", out.train_images, out.train_labels),
        ("test", out.test_images, out.test_labels),
    ):
        batch = _cifar_batch(images, "fine_labels", labels, name)
        batch["coarse_labels"] = (labels // 5).tolist()
        _pickle(base / name, batch)
    coarse = [f"coarse_{i:02d}" for i in range(20)]
    _pickle(base / "meta", {"fine_label_names": out.classes, "coarse_label_names": coarse})
    return out


def write_svhn(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> FakeSplits:
    """SVHN cropped digits: X uint8 [32,32,3,N], y uint8 [N,1] with digit 0 stored as 10.

    Use n >= 2 per split (torchvision squeezes y, which makes a single label 0-d).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = FakeSplits(
        fake_images(n_train, seed=seed),
        balanced_labels(n_train, 10, seed),
        fake_images(n_test, seed=seed + 100),
        balanced_labels(n_test, 10, seed + 100),
        [str(d) for d in range(10)],
    )
    for split, images, labels in (
        ("train", out.train_images, out.train_labels),
        ("test", out.test_images, out.test_labels),
    ):
        stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        mat = {"X": images.transpose(2, 3, 1, 0), "y": stored}
        scipy.io.savemat(root / f"{split}_32x32.mat", mat)
    return out


def _save_image(path: Path, chw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)


def _write_folder(
    directory: Path,
    classes: Sequence[str],
    per_class: int,
    size: int,
    filename: Callable[[str, int], str],
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Class subfolders of ``directory``; returns images and labels in ImageFolder order
    (sorted classes, then sorted file names)."""
    names = sorted(classes)
    jpeg = filename(names[0], 0).lower().endswith((".jpg", ".jpeg")) if names else False
    images = fake_images(len(names) * per_class, size, seed, smooth=jpeg)
    labels = np.repeat(np.arange(len(names)), per_class).astype(np.int64)
    for i, (chw, label) in enumerate(zip(images, labels, strict=True)):
        _save_image(directory / names[label] / filename(names[label], i % per_class), chw)
    return images, labels


def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("cat", "dog", "fox"),
    n_train: int = 4,
    n_test: int = 2,
    size: int = 16,
    fmt: str = "png",
    test_dir: str = "test",
    seed: int = 0,
) -> FakeSplits:
    """``root/train/<class>/NNNN.<fmt>`` and ``root/<test_dir>/<class>/``; n_* are per class.

    Labels follow the sorted class names, as torchvision's ImageFolder assigns them.
    """
    root = Path(root)

    def filename(_: str, i: int) -> str:
        return f"{i:04d}.{fmt}"

    train = _write_folder(root / "train", classes, n_train, size, filename, seed)
    test = _write_folder(root / test_dir, classes, n_test, size, filename, seed + 100)
    return FakeSplits(*train, *test, sorted(classes))


def write_imagenet(
    root: str | Path,
    wnids: Sequence[str],
    n_train: int = 2,
    n_val: int = 1,
    size: int = 8,
    seed: int = 0,
) -> FakeSplits:
    """ImageNet layout ``root/{train,val}/<wnid>/<wnid>_N.JPEG``; n_* are per class.

    Labels follow the sorted wnids (full ImageNet); a class list re-labels them by line.
    """
    root = Path(root)

    def filename(wnid: str, i: int) -> str:
        return f"{wnid}_{i}.JPEG"

    train = _write_folder(root / "train", wnids, n_train, size, filename, seed)
    val = _write_folder(root / "val", wnids, n_val, size, filename, seed + 100)
    return FakeSplits(*train, *val, sorted(wnids))


def write_class_list(path: str | Path, wnids: Sequence[str]) -> Path:
    """A SCAN-style class list: one '<wnid> <name>' line per class, label = line index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} Class Name {i}\n" for i, w in enumerate(wnids)))
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust_fake_files(monkeypatch, root: str | Path) -> None:
    """Make torchvision's CIFAR-10/100 and SVHN md5 tables match the files under ``root``.

    ``monkeypatch`` is pytest's fixture (restored after the test). Only files that exist are
    re-hashed; the others keep the real release's md5, so missing files still count as missing.
    """
    root = Path(root)

    def fix(base: Path, name: str, md5: str) -> str:
        return _md5(base / name) if (base / name).is_file() else md5

    for cls in (CIFAR10, CIFAR100):
        base = root / cls.base_folder
        for attr in ("train_list", "test_list"):
            table = [[name, fix(base, name, md5)] for name, md5 in getattr(cls, attr)]
            monkeypatch.setattr(cls, attr, table)
        meta = dict(cls.meta, md5=fix(base, cls.meta["filename"], cls.meta["md5"]))
        monkeypatch.setattr(cls, "meta", meta)
    splits = {
        s: [url, name, fix(root, name, md5)] for s, (url, name, md5) in SVHN.split_list.items()
    }
    monkeypatch.setattr(SVHN, "split_list", splits)
