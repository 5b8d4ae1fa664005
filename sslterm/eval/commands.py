"""``sslterm features`` and ``sslterm probe``: evaluation outside the training loop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sslterm.errors import UserError
from sslterm.profile.load import load_profile
from sslterm.profile.schema import ProbeConfig, Profile
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.store import RunDir, atomic_write_text, find_run


def encoder_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The encoder's weights from an accelerate checkpoint (``model.safetensors``)."""
    path = checkpoint / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{checkpoint}: no model.safetensors in this checkpoint")
    state = load_file(path)
    prefix = "encoder."
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            out[key[len(prefix):].replace("_orig_mod.", "")] = value
    if not out:
        raise UserError(f"{path}: holds no encoder weights")
    return out


def pick_checkpoint(run: RunDir, name: str | None) -> Path:
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


def export_run_features(run: RunDir, checkpoint: Path, out: Path, device: str = "cpu") -> Path:
    """Features of the frozen encoder on un-augmented train/val/test images, plus weights."""
    from sslterm.data.evalset import eval_batches
    from sslterm.data.registry import build_splits
    from sslterm.eval.export import save_features
    from sslterm.eval.features import extract_features
    from sslterm.models import create_encoder

    profile: Profile = load_profile(run.profile)
    splits = build_splits(profile.data, profile.train.seed)
    info = splits.info
    size = profile.data.image_size or info.image_size
    encoder, _, small_stem = create_encoder(profile.model.encoder, image_size=size,
                                            small_stem=profile.model.small_stem)
    state = encoder_state(checkpoint)
    encoder.load_state_dict(state)
    dev = torch.device(device)
    encoder.to(dev)
    use_tensors = info.small and profile.data.cache
    exported = {}
    for split in ("train", "val", "test"):
        n = len(getattr(splits, split))
        if n == 0:
            continue
        batches = eval_batches(splits, split, torch.arange(n), size=size,
                               batch_size=profile.train.predict_batch_size, device=dev,
                               use_tensors=use_tensors, num_workers=profile.data.num_workers)
        exported[split] = extract_features(encoder, batches, dev)
    meta = {
        "dataset": profile.data.dataset, "num_classes": info.num_classes,
        "encoder": profile.model.encoder, "small_stem": small_stem, "image_size": size,
        "mean": list(info.mean), "std": list(info.std),
        "checkpoint": f"checkpoints/{checkpoint.name}", "run": run.id,
    }
    return save_features(out, exported, meta, state)


def cmd_features(args: argparse.Namespace) -> int:
    run = find_run(args.run, args.output_dir or "./runs")
    checkpoint = pick_checkpoint(run, args.checkpoint)
    out = Path(args.out) if args.out else run.features
    path = export_run_features(run, checkpoint, out)
    meta = json.loads((path / "meta.json").read_text())
    print(f"wrote {path}: {meta['splits']} features of dim {meta['feature_dim']} "
          f"from {meta['checkpoint']}")
    return 0


def _features_path(ref: str, output_dir: str) -> tuple[Path, RunDir | None]:
    path = Path(ref)
    if path.is_file() or (path / "features.safetensors").is_file():
        return path, None
    try:
        run = find_run(ref, output_dir)
    except UserError:
        raise UserError(f"{ref}: neither a features export nor a run") from None
    if not (run.features / "features.safetensors").is_file():
        raise UserError(f"run {run.id} has no exported features; run: sslterm features {run.id}")
    return run.features, run


def probe_config(args: argparse.Namespace, run: RunDir | None) -> ProbeConfig:
    overrides = list(args.sets)
    for item in overrides:
        if not item.startswith("probe."):
            raise UserError(f"--set {item}: only probe.* keys apply to saved features")
    if args.profile:
        return load_profile(args.profile, overrides).probe
    if run is not None:
        return load_profile(run.profile, overrides).probe
    from sslterm.profile.load import validate_text

    return validate_text("", "<defaults>", overrides).probe


def _fmt(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    return f"{metrics['top1']:.2f} / {metrics['top5']:.2f}"


def cmd_probe(args: argparse.Namespace) -> int:
    from sslterm.eval.offline import probe_features

    path, run = _features_path(args.features, args.output_dir or "./runs")
    cfg = probe_config(args, run)
    results = probe_features(path, cfg, device=args.device)
    folder = path if path.is_dir() else path.parent
    atomic_write_text(folder / "probe-results.json", json.dumps(results, indent=2) + "\n")
    lin, knn = results["linear"], results.get("knn") or {}
    print(f"linear probe ({lin['epochs']} epochs, batch {lin['batch_size']}), top-1 / top-5 %:")
    for split in ("train", "val", "test"):
        if split in lin:
            print(f"  {split:<5} {_fmt(lin[split])}")
    if knn:
        print(f"kNN (k={knn['k']}, T={knn['temperature']}), top-1 / top-5 %:")
        for split in ("val", "test"):
            if split in knn:
                print(f"  {split:<5} {_fmt(knn[split])}")
    print(f"wrote {folder / 'probe-results.json'}")
    return 0
