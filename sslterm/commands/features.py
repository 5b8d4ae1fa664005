"""The torch work behind ``sslterm features``: a run's checkpoint to a features export.

It builds the run's model as the trainer does (:mod:`sslterm.train.model`) and reads the
run store, so it sits above both (not in :mod:`sslterm.eval`, which the trainer uses). The
command itself lives in :mod:`sslterm.cli`, which imports this module only when it runs, so
the light commands never load torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from torch import nn

from sslterm.errors import UserError
from sslterm.profile.load import load_profile
from sslterm.profile.schema import Profile
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.store import RunDir

if TYPE_CHECKING:
    from sslterm.data.registry import Splits

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def encoder_state(checkpoint: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``model.eval_encoder()`` (the run's method, built from its profile)
    after loading the checkpoint's ``model.safetensors`` into ``model``: what a method
    evaluates is its own business (a student encoder, say), never a key prefix."""
    path = checkpoint / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{checkpoint}: no model.safetensors in this checkpoint")
    state = {k.replace("_orig_mod.", ""): v for k, v in load_file(path).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = (str(err).splitlines() or [""])[0]
        raise UserError(f"{path}: does not fit the run's model ({first})") from None
    return model.eval_encoder().state_dict()


def pick_checkpoint(run: RunDir, name: str | None) -> Path:
    """The run's complete checkpoint called ``name`` (a folder name or path suffix), else
    its newest; a torn checkpoint is never picked."""
    found = ckpt.complete_checkpoints(run.checkpoints)
    if not found:
        raise UserError(f"run {run.id} has no complete checkpoint")
    if name is None:
        return found[-1][0]
    for path, _ in found:
        if path.name == name or str(path).endswith(name):
            return path
    raise UserError(f"run {run.id} has no complete checkpoint {name!r} "
                    f"(have: {', '.join(p.name for p, _ in found)})")


def split_order(splits: Splits) -> dict[str, Any]:
    """Which image each feature row is: per split, the official split it comes from and
    the row indices into it (``files`` lists an image folder's files in that order)."""
    order: dict[str, Any] = {
        "train": {"official": "train", "indices": splits.train_indices.tolist()},
        "val": {"official": "train", "indices": splits.val_indices.tolist()},
        "test": {"official": "test", "indices": list(range(len(splits.test)))},
    }
    for split in ("train", "test"):
        samples = getattr(getattr(splits, split), "dataset", getattr(splits, split))
        if hasattr(samples, "samples"):
            order[f"{split}_files"] = [str(path) for path, _ in samples.samples]
    return order


def class_names(splits: Splits) -> list[str]:
    """The label names in label order: the dataset's own, else the label numbers."""
    names = getattr(splits.test, "classes", None)
    return [str(c) for c in names] if names else [str(i) for i in range(splits.info.num_classes)]


def export_run_features(run: RunDir, checkpoint: Path, out: Path, device: str = "cpu") -> Path:
    """Features of the frozen encoder on un-augmented train/val/test images, plus weights,
    extracted as the run's in-training evaluation does (memory format, autocast), so a
    probe on them repeats the run's own linear eval."""
    from sslterm.data.evalset import eval_batches
    from sslterm.data.registry import build_splits
    from sslterm.eval.export import save_features
    from sslterm.eval.features import extract_features
    from sslterm.train.batches import uses_tensor_cache
    from sslterm.train.model import build_model

    profile: Profile = load_profile(run.profile)
    splits = build_splits(profile.data, profile.train.seed)
    info = splits.info
    size = profile.data.image_size or info.image_size
    built = build_model(profile, size, info.num_classes, pretrained_weights=False)
    state = encoder_state(checkpoint, built.model)
    encoder = built.model.eval_encoder()
    dev = torch.device(device)
    encoder.to(dev)
    # the images reach the encoder as in the run's own evaluation
    use_tensors = uses_tensor_cache(profile.data, info.small)
    exported = {}
    for split in ("train", "val", "test"):
        n = len(getattr(splits, split))
        if n == 0:
            continue
        batches = eval_batches(splits, split, torch.arange(n), size=size,
                               batch_size=profile.train.predict_batch_size, device=dev,
                               use_tensors=use_tensors, num_workers=profile.data.num_workers)
        exported[split] = extract_features(
            encoder, batches, dev, channels_last=profile.train.channels_last,
            autocast_dtype=AUTOCAST.get(profile.train.precision),
        )
    meta = {
        "dataset": profile.data.dataset, "num_classes": info.num_classes,
        "encoder": profile.model.encoder, "small_stem": built.small_stem, "image_size": size,
        "mean": list(info.mean), "std": list(info.std),
        "checkpoint": f"checkpoints/{checkpoint.name}", "run": run.id,
        "seed": profile.train.seed, "classes": class_names(splits), "order": split_order(splits),
    }
    return save_features(out, exported, meta, state)
