"""Dataset registry and the ``Splits`` a run trains from.

A builder (``@register_dataset("name")``) turns a ``DataConfig`` into a ``Source``: the
official train and test sets plus how to fingerprint and decode them. ``build_splits``
adds what every dataset shares: the seeded train/val split of the training set (as the
original experiment: fixed by the seed) and access to the uint8 tensor cache.

This module never imports the builders (timm style): the package ``sslterm/data/__init__``
imports ``sslterm.data.datasets``, whose builders register themselves, so importing any
``sslterm.data`` module fills the registry and no import cycle can arise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset, Subset

from sslterm.data.cache import ImageRows, ImageTensors, load_or_build
from sslterm.errors import UserError, unknown_name
from sslterm.profile.schema import DataConfig

__all__ = [
    "CHECKS",
    "DATASETS",
    "DataShape",
    "DatasetInfo",
    "ImageRows",
    "ImageTensors",
    "Source",
    "Splits",
    "build_splits",
    "check_data",
    "held_out",
    "register_dataset",
    "split_indices",
]

Split = Literal["train", "val", "test"]
OfficialSplit = Literal["train", "test"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """What the engine needs to know about a dataset before it sees an image."""

    name: str
    num_classes: int
    image_size: int  # the size the model sees (data.image_size, or the dataset's own)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    small: bool  # decoded into the uint8 tensor cache (and eligible for GPU-resident training)


@dataclass
class Source:
    """What a builder returns: the official splits and how to cache them.

    ``fingerprint(split)`` must be cheap and JSON-able (paths, sizes, mtimes, generation
    parameters): it keys the tensor cache. ``decode(split)`` turns a whole official split
    into uint8 tensors at the dataset's stored size; only called when ``info.small``.
    """

    info: DatasetInfo
    train: Dataset
    test: Dataset
    root: Path  # the data folder; the tensor cache lives under it
    fingerprint: Callable[[OfficialSplit], object]
    decode: Callable[[OfficialSplit], ImageTensors]


@dataclass(frozen=True)
class DataShape:
    """What a pre-flight learns about a dataset without decoding it: enough to refuse, before
    launch, a profile that would fail (or silently mislead) only once the trainer runs."""

    image_size: int  # the size the model sees (data.image_size, or the dataset's own)
    count_train: Callable[[int], int]  # official training images, counted up to a bound


Builder = Callable[[DataConfig, int], Source]
Check = Callable[[DataConfig], DataShape]
DATASETS: dict[str, Builder] = {}
CHECKS: dict[str, Check] = {}


def register_dataset(name: str, check: Check | None = None) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder(cfg, seed) -> Source`` available as ``data.dataset = name``.

    ``check(cfg) -> DataShape`` is an optional cheaper pre-flight for ``check_data`` (e.g.
    list the class folders instead of walking a million files); without one, the builder is
    the check.
    """

    def add(builder: Builder) -> Builder:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = builder
        if check is not None:
            CHECKS[name] = check
        return builder

    return add


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, val) index split of ``range(n)``; sorted, disjoint, together complete."""
    n_val = held_out(n, val_fraction)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class Splits:
    """The three splits of a run: SSL ``train``, held-out ``val`` (both from the official
    training set) and the official ``test`` split. Items are ``(PIL RGB image, int label)``.

    ``train_indices`` / ``val_indices`` index the full training set, i.e. the rows of
    ``tensors("train")`` are ``full[train_indices]``: indexed into the one (memory-mapped)
    full split, never copied out of it.

    With ``val_fraction`` 0 the whole training set trains and ``val`` is the test split
    (``val_is_test``): SSL validation and the kNN monitor score it, as solo-learn's
    recipes do (their val_path is the test set).
    """

    def __init__(self, source: Source, seed: int, val_fraction: float, cache: bool = True) -> None:
        self.info = source.info
        self._source = source
        self._cache = cache
        self._full: dict[OfficialSplit, ImageTensors] = {}
        self.train_indices, self.val_indices = split_indices(len(source.train), val_fraction, seed)
        self.train: Dataset = Subset(source.train, self.train_indices.tolist())
        self.val_is_test = val_fraction == 0  # as written: a share rounding to 0 is no switch
        self.test: Dataset = source.test
        self.val: Dataset = (self.test if self.val_is_test
                             else Subset(source.train, self.val_indices.tolist()))

    def tensors(self, split: Split) -> ImageRows:
        """Decoded uint8 images + labels of ``split`` via the tensor cache (small datasets only):
        rows of the official split's cached tensors, gathered per batch (:class:`ImageRows`).

        Images keep the dataset's stored size (32 px for CIFAR/SVHN; the first image's size
        for image folders); resizing to ``info.image_size`` is the augmentation's job. With
        ``data.cache = false`` the images are decoded in memory and no file is written.
        With several processes, let the main one build the cache first
        (``accelerator.main_process_first()``): concurrent builds are safe, only wasted work.
        """
        if not self.info.small:
            raise UserError(
                f"{self.info.name}: images are too large for the uint8 tensor cache "
                f"({self.info.image_size} px); use data.augment = 'cpu'"
            )
        if split == "test" or (split == "val" and self.val_is_test):
            test = self._official("test")
            return test.rows(torch.arange(len(test)))
        indices = self.train_indices if split == "train" else self.val_indices
        return self._official("train").rows(indices)

    def _official(self, split: OfficialSplit) -> ImageTensors:
        if split not in self._full:
            source = self._source
            if self._cache:
                self._full[split] = load_or_build(
                    source.root,
                    f"{self.info.name}-{split}",
                    source.fingerprint(split),
                    lambda: source.decode(split),
                )
            else:
                self._full[split] = source.decode(split)
        return self._full[split]


def build_splits(cfg: DataConfig, seed: int) -> Splits:
    """Open ``cfg.dataset`` and split it; raises ``UserError`` for anything on disk to fix."""
    return Splits(_builder(cfg)(cfg, seed), seed, cfg.val_fraction, cfg.cache)


def check_data(cfg: DataConfig) -> DataShape:
    """Pre-flight in the launching process, before any rank starts: fetch what may be fetched
    (torchvision downloads, SCAN class lists) once, and raise ``UserError`` for anything missing.
    """
    builder = _builder(cfg)
    check = CHECKS.get(cfg.dataset)
    if check is not None:
        return check(cfg)
    source = builder(cfg, 0)
    n = len(source.train)  # type: ignore[arg-type]
    return DataShape(source.info.image_size, lambda bound: n)


def held_out(n: int, val_fraction: float) -> int:
    """How many of ``n`` training images :func:`split_indices` holds out for validation."""
    return min(round(n * val_fraction), max(n - 1, 0))


def _builder(cfg: DataConfig) -> Builder:
    builder = DATASETS.get(cfg.dataset)
    if builder is None:
        raise UserError(unknown_name("dataset", cfg.dataset, DATASETS))
    return builder
