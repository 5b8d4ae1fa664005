"""Does sslterm's DINO learn as DINO does? sslterm against a DINO built from lightly's parts,
both at lightly's own CIFAR-10 benchmark settings, same data and budget, judged by kNN.

lightly's settings (docs/source/getting_started/benchmarks/cifar10_benchmark.py,
``DINOModel``; 0.868 kNN after 200 epochs at batch 128 on an RTX A6000):

- ``DINOTransform(global_crop_size=32, n_local_views=0, gaussian_blur=(0, 0, 0))``: two
  views, scale 0.4-1, jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2, the second
  view solarized with p 0.2, no blur;
- a two-layer ``DINOProjectionHead`` (512 -> 2048 with BatchNorm and GELU -> 256), 2048
  prototypes, weight-normalised last layer, never frozen;
- ``DINOLoss(output_dim=2048)``: teacher temperature 0.04 throughout, student 0.1, center
  momentum 0.9; teacher EMA fixed at 0.99;
- SGD, lr 0.06 * batch / 128, momentum 0.9, weight decay 5e-4, cosine over the epochs, no
  warmup.

sslterm runs ``profiles/cifar10-dino.toml`` through the real CLI with those values as
overrides (``LIGHTLY_BENCHMARK``); the reference is lightly's transform, head, loss and
``update_momentum`` around timm's ResNet-18 and torch's SGD, with no sslterm code. Both
encoders are then scored by the same kNN (lightly's ``knn_predict``, k 200, T 0.1) on the
test split, features of the un-augmented images. Each also logs, per logged step, the
teacher's entropy (a share of ln K) and KL(teacher || student): the loss alone sits near
ln K while the teacher is near uniform, whether or not the student learns.

The budget is a CPU's: a class-balanced subset, and ``--stem imagenet`` (timm's own stem,
16x cheaper at 32 px than lightly's CIFAR ResNet) for both. Views, BatchNorm batches and
random streams differ, so the two agree within seed noise, not step for step.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar10
    python benchmarks/dino_learns.py --data /tmp/cifar10 --work /tmp/dino-learns \\
        [--train-per-class 500 --epochs 20 --batch-size 128 --stem imagenet --seeds 0] \\
        [--only sslterm|lightly]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead, ProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import DINOTransform
from lightly.utils.benchmarking import knn_predict
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_check import build_subset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_NORMALIZE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LIGHTLY_BENCHMARK = [  # lightly's DINOModel as sslterm profile values
    "dino.local_crops=0", "dino.global_scale=[0.4, 1.0]", "dino.head_layers=2",
    "dino.head_batch_norm=true", "dino.projector_hidden_dim=2048", "dino.bottleneck_dim=256",
    "dino.output_dim=2048", "dino.norm_last_layer=true", "dino.freeze_last_layer_epochs=0",
    "dino.teacher_temp=0.04", "dino.warmup_teacher_temp=0.04",
    "dino.warmup_teacher_temp_epochs=0", "dino.student_temp=0.1", "dino.center_momentum=0.9",
    "dino.momentum_start=0.99", "dino.momentum_end=0.99",
    "augment.crop_scale=[0.4, 1.0]", "augment.brightness=0.4", "augment.contrast=0.4",
    "augment.saturation=0.2", "augment.hue=0.1", "augment.color_p=0.8",
    "augment.grayscale_p=0.2", "augment.blur=false", "augment.flip_p=0.5",
    "augment.views.solarize_p=[0.0, 0.2]",
    "train.optimizer=sgd", "train.base_lr=0.12", "train.lr_scaling=linear",  # 0.06 * B / 128
    "train.weight_decay=5e-4", "train.momentum=0.9", "train.warmup_epochs=0",
    "train.min_lr_ratio=0", "train.grad_clip=0", "train.precision=no",
]


def encoder(stem: str) -> nn.Module:
    model = timm.create_model("resnet18", num_classes=0)
    if stem == "cifar":  # lightly's ResNetGenerator: 3x3 stride-1 stem, no max-pool
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


def lightly_head() -> DINOProjectionHead:
    """lightly's benchmark head: a DINOProjectionHead cut to two layers."""
    head = DINOProjectionHead(512, 2048, 256, 2048, batch_norm=True)
    head.layers = ProjectionHead([(512, 2048, nn.BatchNorm1d(2048), nn.GELU()),
                                  (2048, 256, None, None)]).layers
    return head


def entropy_and_kl(teacher: list[torch.Tensor], student: list[torch.Tensor], center: torch.Tensor,
                   teacher_temp: float, student_temp: float) -> tuple[float, float]:
    """Teacher entropy (share of ln K) and KL(teacher || student) over DINO's pairs."""
    with torch.no_grad():
        t = [torch.softmax((x - center) / teacher_temp, -1) for x in teacher]
        s = [torch.log_softmax(x / student_temp, -1) for x in student]
        h = [-(p * p.clamp_min(1e-30).log()).sum(-1).mean() for p in t]
        kls = [(-(p * s[j]).sum(-1).mean() - h[i]).item()
               for i, p in enumerate(t) for j in range(len(s)) if j != i]
        k = teacher[0].shape[-1]
    return statistics.mean(x.item() for x in h) / math.log(k), statistics.mean(kls)


def run_reference(args: argparse.Namespace, subset: Path, seed: int) -> tuple[nn.Module, list]:
    """DINO from lightly's parts at its benchmark's settings; returns the student encoder."""
    torch.manual_seed(seed)
    transform = DINOTransform(global_crop_size=32, n_local_views=0, gaussian_blur=(0, 0, 0),
                              normalize=IMAGENET_NORMALIZE)
    data = ImageFolder(str(subset / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True,
                                         drop_last=True, num_workers=args.workers)
    backbone, head = encoder(args.stem), lightly_head()
    teacher_backbone, teacher_head = copy.deepcopy(backbone), lightly_head()
    deactivate_requires_grad(teacher_backbone)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(output_dim=2048)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.06 * args.batch_size / 128, momentum=0.9,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    log, step = [], 0
    for epoch in range(args.epochs):
        start = time.time()
        for views, _ in loader:
            update_momentum(backbone, teacher_backbone, m=0.99)
            update_momentum(head, teacher_head, m=0.99)
            teacher_out = [teacher_head(teacher_backbone(v)) for v in views[:2]]
            student_out = [head(backbone(v)) for v in views]
            center = criterion.center.clone()  # the loss's center: the call below moves it
            loss = criterion(teacher_out, student_out, epoch=epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % args.log_every == 0:
                ent, kl = entropy_and_kl(teacher_out, student_out, center,
                                         criterion.teacher_temp, criterion.student_temp)
                log.append({"step": step, "loss": loss.item(), "teacher_entropy": ent, "kl": kl})
            step += 1
        sched.step()
        print(f"  reference seed {seed} epoch {epoch}: {time.time() - start:.0f} s, "
              f"loss {loss.item():.3f}", file=sys.stderr, flush=True)
    return backbone, log


def run_sslterm(args: argparse.Namespace, subset: Path, seed: int) -> tuple[nn.Module, list]:
    """sslterm's DINO through the CLI at the same settings; returns its exported encoder."""
    out = args.work / f"sslterm-{seed}"
    common = [
        "data.dataset=imagefolder", f"data.root={subset}", "data.download=false",
        "data.image_size=32", "data.val_fraction=0", f"data.num_workers={args.workers}",
        "model.encoder=resnet18", f"model.small_stem={'on' if args.stem == 'cifar' else 'off'}",
        "model.sync_batchnorm=false", f"train.batch_size={args.batch_size}",
        f"train.epochs={args.epochs}", f"train.seed={seed}", f"train.log_every={args.log_every}",
        "train.val_interval=0", "train.checkpoint_interval=0", "train.online_probe=false",
        "probe.enabled=false",
    ]
    cli = [sys.executable, "-m", "sslterm", "-o", str(out)]
    subprocess.run([*cli, "run", str(ROOT / "profiles/cifar10-dino.toml"), *common,
                    *LIGHTLY_BENCHMARK], check=True, cwd=args.work, stdout=subprocess.DEVNULL)
    run = next(p for p in out.iterdir() if (p / "status.json").exists())
    subprocess.run([*cli, "features", run.name], check=True, cwd=args.work,
                   stdout=subprocess.DEVNULL)
    model = encoder(args.stem)
    model.load_state_dict(load_file(run / "features" / "encoder.safetensors"))
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    log = [{k: e.get(k) for k in ("step", "loss", "teacher_entropy", "kl")}
           for e in events if e.get("kind") == "step"]
    return model, log


@torch.no_grad()
def knn_accuracy(model: nn.Module, subset: Path, batch_size: int = 256) -> float:
    """kNN top-1 (%) of the test split against the train split, un-augmented, as lightly's
    BenchmarkModule: l2-normalised features, k 200, T 0.1."""
    model.eval()
    plain = T.Compose([T.ToTensor(), T.Normalize(**IMAGENET_NORMALIZE)])

    def features(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        data = ImageFolder(str(subset / split), transform=plain)
        feats, labels = [], []
        for x, y in torch.utils.data.DataLoader(data, batch_size=batch_size):
            feats.append(nn.functional.normalize(model(x), dim=1))
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    bank, bank_labels = features("train")
    queries, labels = features("test")
    pred = torch.cat([knn_predict(q, bank.T, bank_labels, 10, 200, 0.1)[:, 0]
                      for q in queries.split(512)])
    return (pred == labels).float().mean().item() * 100


def rescore(args: argparse.Namespace, subset: Path, random_init: float) -> None:
    """kNN of the encoders an earlier run saved, on a larger test split than it used."""
    tests = sum(1 for _ in (subset / "test").glob("*/*"))
    print(f"random init: kNN test top-1 {random_init:.2f}% ({tests} test images)")
    for weights in sorted(args.work.glob("*.safetensors")):
        side, seed = weights.stem.rsplit("-", 1)
        if int(seed) not in args.seeds or (args.only and not side.startswith(args.only)):
            continue
        model = encoder(args.stem)
        model.load_state_dict(load_file(str(weights)))
        print(f"{side} seed {seed}: kNN test top-1 {knn_accuracy(model, subset):.2f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="extracted cifar10-jpeg folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dino-learns"))
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--stem", choices=["imagenet", "cifar"], default="imagenet")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--only", choices=["sslterm", "lightly"],
                    help="run one side (two processes in parallel use a CPU better)")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: score the encoders saved in --work for --seeds again, "
                         "on --test-per-class test images (1000: all of CIFAR-10's test set)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    subset_name = f"subset-test{args.test_per_class}" if args.rescore else "subset"
    subset = build_subset(args.data, args.work / subset_name, args.train_per_class,
                          args.test_per_class)
    torch.manual_seed(0)
    random_init = knn_accuracy(encoder(args.stem), subset)
    if args.rescore:
        rescore(args, subset, random_init)
        return
    rows = []
    for seed in args.seeds:
        for name, fn in (("sslterm", run_sslterm), ("lightly parts", run_reference)):
            if args.only and not name.startswith(args.only):
                continue
            start = time.time()
            model, log = fn(args, subset, seed)
            acc = knn_accuracy(model, subset)
            rows.append((name, seed, acc, log, time.time() - start))
            base = args.work / f"{name.replace(' ', '-')}-{seed}"
            base.with_suffix(".json").write_text(json.dumps(log))
            save_file(model.state_dict(), str(base.with_suffix(".safetensors")))  # re-score later
            print(f"{name} seed {seed}: kNN {acc:.1f}% ({time.time() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    print(f"random init: kNN test top-1 {random_init:.1f}%")
    print("| DINO | seed | kNN test top-1 | teacher entropy, first -> last | KL(t||s), first -> "
          "last | loss, first -> last | minutes |")
    print("|---|---|---|---|---|---|---|")
    for name, seed, acc, log, seconds in rows:
        a, b = log[0], log[-1]
        print(f"| {name} | {seed} | {acc:.1f}% | {a['teacher_entropy']:.3f} -> "
              f"{b['teacher_entropy']:.3f} | {a['kl']:.3f} -> {b['kl']:.3f} | "
              f"{a['loss']:.3f} -> {b['loss']:.3f} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()
