"""DINO's early plateau: sslterm against a reference built from lightly, same data, same steps.

A short DINO run on a random-init ResNet-18 keeps its loss near ln K while the teacher's
entropy climbs towards its maximum (the uniform collapse that centering guards against
and sharpening must overcome). Is that sslterm's DINO, or DINO itself? This script runs
both for the same number of steps on the same image folder and prints the teacher's
entropy (a share of ln K) and the loss side by side:

- **sslterm**: ``sslterm run profiles/cifar10-dino.toml`` through the real CLI;
- **reference**: timm's ResNet-18 with lightly's ``DINOProjectionHead``, ``DINOLoss``
  (centering, temperature warm-up), ``DINOTransform`` (per-sample multi-crop in a
  DataLoader), ``update_momentum`` and ``cosine_schedule``, the paper's per-resolution
  multi-crop forward, and torch's SGD: no sslterm code but the lr formula and the
  entropy measure.

Both use SGD (lightly ships no LARS with solo-learn's ``clip_lr``) and the learning
check's short-schedule settings. Views, BatchNorm batches and random streams differ, so
the curves agree in shape, not step for step.

    python benchmarks/dino_plateau.py --data /tmp/learning-check/cifar10-subset \
        [--steps-per-epoch 8 --epochs 15 --batch-size 128] [--set dino.head_batch_norm=true]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import timm
import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule
from torch import nn
from torchvision.datasets import ImageFolder

from sslterm.methods.losses import dino_teacher_entropy
from sslterm.train.optim import lr_at

ROOT = Path(__file__).resolve().parents[1]
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def settings(args: argparse.Namespace) -> dict[str, str]:
    """The profile keys both runs share (the learning check's, with SGD), as overrides."""
    keys = {
        "data.dataset": "imagefolder", "data.root": str(args.data), "data.download": "false",
        "data.image_size": "32", "data.num_workers": "0", "model.encoder": "resnet18",
        "model.small_stem": "off", "model.sync_batchnorm": "false", "train.precision": "no",
        "train.val_interval": "0", "train.checkpoint_interval": "0", "probe.enabled": "false",
        "train.epochs": str(args.epochs), "train.warmup_epochs": "1",
        "train.max_steps_per_epoch": str(args.steps_per_epoch),
        "train.batch_size": str(args.batch_size), "train.log_every": "1",
        "train.optimizer": "sgd", "train.base_lr": str(args.base_lr),
        "dino.momentum_start": "0.99", "dino.warmup_teacher_temp_epochs": "30",
    }
    keys.update(kv.split("=", 1) for kv in args.set)
    return keys


def run_sslterm(keys: dict[str, str], work: Path) -> list[tuple[float, float]]:
    out = work / "sslterm"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "sslterm", "-o", str(out), "run",
           str(ROOT / "profiles" / "cifar10-dino.toml"), *(f"{k}={v}" for k, v in keys.items())]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    events = next(out.glob("*/events.jsonl"))
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    return [(r["loss"], r["teacher_entropy"]) for r in rows if r.get("kind") == "step"]


def multicrop(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> list:
    """One backbone pass per run of same-size views, one head pass (the paper's wrapper)."""
    feats, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        feats.append(backbone(torch.cat(views[start:end])))
        start = end
    return list(head(torch.cat(feats)).chunk(len(views)))


def stack_views(items: list) -> list[torch.Tensor]:
    """A batch of (views, label) items as one tensor per view."""
    return [torch.stack(v) for v in zip(*(views for views, _ in items), strict=True)]


def run_reference(keys: dict[str, str], seed: int) -> list[tuple[float, float]]:
    """The same schedule with lightly's DINO pieces, per-sample augmentation, torch SGD."""
    torch.manual_seed(seed)
    k = {name.split(".", 1)[1]: v for name, v in keys.items()}
    out_dim, bn = int(k.get("output_dim", 4096)), k.get("head_batch_norm", "false") == "true"
    epochs, per_epoch, batch = int(k["epochs"]), int(k["max_steps_per_epoch"]), int(k["batch_size"])
    transform = DINOTransform(
        global_crop_size=32, global_crop_scale=(0.4, 1.0), local_crop_size=16,
        local_crop_scale=(0.05, 0.4), n_local_views=int(k.get("local_crops", 6)),
        cj_strength=0.5, gaussian_blur=(0.0, 0.0, 0.0), solarization_prob=0.0,
        normalize={"mean": CIFAR_MEAN, "std": CIFAR_STD})
    data = ImageFolder(str(Path(k["root"]) / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         collate_fn=stack_views)
    backbone = timm.create_model("resnet18", num_classes=0)
    head = DINOProjectionHead(512, 2048, 256, out_dim, batch_norm=bn, freeze_last_layer=1)
    t_backbone, t_head = copy.deepcopy(backbone), DINOProjectionHead(
        512, 2048, 256, out_dim, batch_norm=bn)
    t_head.load_state_dict(head.state_dict())
    deactivate_requires_grad(t_backbone)
    deactivate_requires_grad(t_head)
    criterion = DINOLoss(out_dim, warmup_teacher_temp=0.04, teacher_temp=0.07,
                         warmup_teacher_temp_epochs=int(k["warmup_teacher_temp_epochs"]),
                         student_temp=0.1, center_momentum=0.9)
    params = [*backbone.parameters(), *head.parameters()]
    peak = float(k["base_lr"]) * batch / 256
    opt = torch.optim.SGD(params, lr=peak, momentum=0.9, weight_decay=1e-6)
    total, curve, step = epochs * per_epoch, [], 0
    for epoch in range(epochs):
        for i, views in enumerate(loader):
            if i == per_epoch:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, per_epoch, peak)
            with torch.no_grad():
                teacher = multicrop(t_backbone, t_head, views[:2])
            student = multicrop(backbone, head, views)
            center = criterion.center.flatten().clone()
            loss = criterion(teacher, student, epoch=epoch)
            opt.zero_grad()
            loss.backward()
            head.cancel_last_layer_gradients(epoch)
            opt.step()
            m = cosine_schedule(step, total, 0.99, 1.0)
            update_momentum(backbone, t_backbone, m)
            update_momentum(head, t_head, m)
            temp = float(criterion.teacher_temp_schedule[epoch])
            curve.append((loss.item(), dino_teacher_entropy(teacher, center, temp).item()))
            step += 1
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="image folder with train/")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dino-plateau"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--steps-per-epoch", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--base-lr", type=float, default=0.06, help="SGD lr at batch 256")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more overrides for both runs (dino.head_batch_norm, dino.output_dim)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", ".*weight_norm.*", FutureWarning)  # lightly's head
    args.work.mkdir(parents=True, exist_ok=True)
    keys = settings(args)
    ours, theirs = run_sslterm(keys, args.work), run_reference(keys, seed=42)
    print("| step | sslterm loss | entropy | reference loss | entropy |")
    print("|---|---|---|---|---|")
    for step in range(0, len(ours), max(1, len(ours) // 10)):
        (a, b), (c, d) = ours[step], theirs[step]
        print(f"| {step} | {a:.3f} | {b:.3f} | {c:.3f} | {d:.3f} |")


if __name__ == "__main__":
    main()
