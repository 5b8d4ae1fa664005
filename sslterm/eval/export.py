"""The precomputed-features format: safetensors + JSON, readable without sslterm or pickle.

Layout of an export directory::

    features.safetensors  {split}_features [N, D] float32 and {split}_labels [N] int64
                          for split in train (required), val (optional), test, ...
    encoder.safetensors   the timm encoder's state_dict (built with num_classes=0)
    meta.json             {"format": "sslterm-features", "version": 1, "dataset",
                           "num_classes", "feature_dim", "encoder", "small_stem",
                           "image_size", "mean", "std", "protocol", "checkpoint", "run",
                           "splits": {split: N}}

Loading without sslterm::

    import json, timm, torch
    from safetensors.torch import load_file
    feats = load_file("features.safetensors")          # dict of tensors
    meta = json.load(open("meta.json"))
    model = timm.create_model(meta["encoder"], num_classes=0)
    if meta["small_stem"]:                              # 3x3 stride-1 stem, no max-pool
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)   # (ResNets)
        model.maxpool = torch.nn.Identity()
    model.load_state_dict(load_file("encoder.safetensors"))
    model.eval()  # images resized to meta["image_size"], normalised with mean/std

An export is written to a temporary sibling directory, fsynced and renamed into place,
so a failure never leaves a half-written export and never damages the previous one (a
directory cannot be renamed over a non-empty one, so the previous export is first set
aside as ``.NAME.old-*``; only a crash between those two renames would leave it there).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from sslterm.errors import UserError
from sslterm.eval.layout import ENCODER_FILE, FEATURES_FILE, FORMAT, META_FILE, VERSION

PROTOCOL = "frozen encoder, eval mode, un-augmented images"

Split = tuple[Tensor, Tensor]


def _ordered(names: set[str]) -> list[str]:
    """train, val, test first, then any other split alphabetically."""
    known = [n for n in ("train", "val", "test") if n in names]
    return known + sorted(names - set(known))


def _flat_tensors(splits: dict[str, Split]) -> tuple[dict[str, Tensor], int]:
    """Validate splits for saving; return the safetensors dict and the feature dim."""
    if "train" not in splits:
        raise ValueError("an export needs a 'train' split")
    for name, (features, labels) in splits.items():
        if not name.isidentifier():
            raise ValueError(f"split name {name!r} must be an identifier")
        if features.ndim != 2 or labels.shape != features.shape[:1] or len(labels) == 0:
            raise ValueError(
                f"{name}: features {tuple(features.shape)} and labels {tuple(labels.shape)} "
                "must be non-empty [N, D] and [N]"
            )
        if int(labels.min()) < 0:
            raise ValueError(f"{name} labels must be >= 0")
    dim = splits["train"][0].shape[1]
    tensors: dict[str, Tensor] = {}
    for name, (features, labels) in splits.items():
        if features.shape[1] != dim:
            raise ValueError(f"{name} features have dim {features.shape[1]}, train {dim}")
        tensors[f"{name}_features"] = features.detach().to("cpu", torch.float32).contiguous()
        tensors[f"{name}_labels"] = labels.detach().to("cpu", torch.int64).contiguous()
    return tensors, dim


def _fsync_tree(directory: Path) -> None:
    for path in [*directory.iterdir(), directory]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_replaceable(target: Path) -> bool:
    """Only an earlier export (or an empty folder) may be replaced, never an arbitrary path."""
    if not target.exists():
        return True
    if not target.is_dir():
        return False
    return (
        not any(target.iterdir())
        or (target / META_FILE).is_file()
        or (target / FEATURES_FILE).is_file()
    )


def _swap_in(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing target is set aside until the move succeeded."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_features(
    directory: str | Path,
    splits: dict[str, Split],
    meta: dict,
    encoder_state: dict[str, Tensor] | None = None,
) -> Path:
    """Write an export to ``directory`` atomically, replacing an earlier export there.

    ``meta`` carries the caller's facts (dataset, encoder, small_stem, image_size, mean,
    std, checkpoint, run); format, version, feature_dim and the split sizes are filled
    in, num_classes too when absent (max label + 1).
    """
    directory = Path(directory)
    tensors, dim = _flat_tensors(splits)
    max_label = max(int(labels.max()) for _, labels in splits.values())
    num_classes = int(meta.get("num_classes") or max_label + 1)
    if max_label >= num_classes:
        raise ValueError(f"labels go up to {max_label} but num_classes is {num_classes}")
    full_meta = {
        "format": FORMAT,
        "version": VERSION,
        "protocol": PROTOCOL,
        **meta,
        "num_classes": num_classes,
        "feature_dim": dim,
        "splits": {name: len(labels) for name, (_, labels) in splits.items()},
    }
    meta_text = json.dumps(full_meta, indent=2, allow_nan=False) + "\n"
    encoder_tensors = None
    if encoder_state is not None:  # clones: safetensors refuses tensors that share memory
        encoder_tensors = {k: v.detach().to("cpu").clone() for k, v in encoder_state.items()}
    if not _is_replaceable(directory):
        raise UserError(f"{directory} exists and is not a features export; refusing to replace it")

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        save_file(
            tensors, tmp / FEATURES_FILE, metadata={"format": FORMAT, "version": str(VERSION)}
        )
        if encoder_tensors is not None:
            save_file(encoder_tensors, tmp / ENCODER_FILE)
        (tmp / META_FILE).write_text(meta_text)
        _fsync_tree(tmp)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable metadata ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an {FORMAT} metadata file")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise UserError(f"{path}: format version {meta.get('version')!r} is not supported")
    return meta


def _pair_splits(tensors: dict[str, Tensor], file: Path) -> dict[str, Split]:
    names = {key.rsplit("_", 1)[0] for key in tensors if key.endswith(("_features", "_labels"))}
    if "train" not in names:
        raise UserError(
            f"{file}: no train split (expected tensors train_features [N, D] and "
            f"train_labels [N]; found {sorted(tensors) or 'none'})"
        )
    splits = {}
    for name in _ordered(names):
        features, labels = tensors.get(f"{name}_features"), tensors.get(f"{name}_labels")
        if features is None or labels is None:
            raise UserError(f"{file}: split {name!r} needs both {name}_features and {name}_labels")
        if features.ndim != 2 or not features.is_floating_point():
            raise UserError(f"{file}: {name}_features must be a float [N, D] tensor")
        if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise UserError(f"{file}: {name}_labels must be an integer [N] tensor")
        if len(labels) != len(features) or len(labels) == 0:
            raise UserError(f"{file}: {name} has {len(features)} features and {len(labels)} labels")
        if not bool(torch.isfinite(features).all()):
            raise UserError(f"{file}: {name}_features contain NaN or inf")
        splits[name] = (features.float(), labels.long())
    return splits


def load_features(path: str | Path) -> tuple[dict[str, Split], dict]:
    """Load an export directory, or a features .safetensors file made elsewhere.

    Returns ({split: (features float32 [N, D], labels int64 [N])}, meta), train first.
    meta.json is read when the file is an export's features.safetensors; otherwise
    (or when it is missing) num_classes is inferred as max label + 1 and feature_dim
    from the tensors. Bad input raises UserError saying what is wrong.
    """
    path = Path(path)
    file = path / FEATURES_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(
            f"{file}: no such features file (give an export directory holding "
            f"{FEATURES_FILE}, or a .safetensors file)"
        )
    try:
        tensors = load_file(file)
    except (OSError, SafetensorError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({err})") from err
    meta = _read_meta(file.parent / META_FILE) if file.name == FEATURES_FILE else {}
    splits = _pair_splits(tensors, file)

    dims = {name: f.shape[1] for name, (f, _) in splits.items()}
    if len(set(dims.values())) > 1:
        raise UserError(f"{file}: splits disagree on the feature dim: {dims}")
    dim = dims["train"]
    if meta.get("feature_dim", dim) != dim:
        raise UserError(f"{file}: features have dim {dim}, meta.json says {meta['feature_dim']}")
    low = min(int(labels.min()) for _, labels in splits.values())
    high = max(int(labels.max()) for _, labels in splits.values())
    num_classes = meta.get("num_classes", high + 1)
    if low < 0 or not isinstance(num_classes, int) or high >= num_classes:
        raise UserError(
            f"{file}: labels span [{low}, {high}], which does not fit num_classes {num_classes}"
        )
    base = {"format": FORMAT, "version": VERSION}
    return splits, {**base, **meta, "num_classes": num_classes, "feature_dim": dim}
