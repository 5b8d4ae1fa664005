"""Training-loop throughput: sslterm's engine against a loop built from lightly's SimCLR pieces.

Both loops train the same timm encoder (small-input stem) with the same global
batch, precision and optimizer family on this machine's CPU, and both include
producing two augmented views per image:

- sslterm: the real ``Trainer`` (Accelerate, BatchAugment on uint8 tensors,
  LARS, NT-Xent), timed over ``--steps`` optimizer steps of ``train_epoch``.
- reference: lightly's ``SimCLRTransform`` in a DataLoader with the same number
  of workers as torch threads, ``SimCLRProjectionHead``, ``NTXentLoss``, lightly's
  ``LARS``, a plain PyTorch loop.

sslterm runs with its defaults (channels_last, which the reference loop does
not use), and once more in NCHW like the reference, so the memory-format gain
and the loop overhead are seen apart. A last pair of numbers times the model
step alone (forward, loss, backward, optimizer) on fixed tensors. Prints
images/s (each image = two views) and the ratios.

    python benchmarks/bench_train_loop.py [--data /tmp/cifar10] [--steps 5] [--batch 128]

Needs the benchmark extra: ``pip install -e ".[bench]"`` (lightly).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def make_profile(args: argparse.Namespace, out: Path, channels_last: bool) -> str:
    data = (f'dataset = "imagefolder"\nroot = "{args.data}"\ndownload = false\n' if args.data
            else 'dataset = "synthetic"\nsynthetic_size = 2048\n')
    return f"""
name = "bench"
[data]
{data}image_size = 32
num_workers = 0
augment = "auto"
[augment]
blur = false
[model]
encoder = "{args.encoder}"
small_stem = "on"
[simclr]
projector_hidden_dim = 512
projector_dim = 128
temperature = 0.5
[train]
epochs = 1
batch_size = {args.batch}
optimizer = "lars"
base_lr = 0.3
lr_scaling = "none"
warmup_epochs = 0
precision = "no"
channels_last = {str(channels_last).lower()}
max_steps_per_epoch = {args.steps + 1}
log_every = 1000
val_interval = 0
online_probe = false
[probe]
enabled = false
[launch]
cpu = true
output_dir = "{out}"
"""


def bench_sslterm(args: argparse.Namespace, channels_last: bool = True,
                  step_only: bool = True) -> tuple[float, float]:
    from sslterm.profile.load import validate_text
    from sslterm.runs.store import RunDir
    from sslterm.train.engine import Position, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp) / "run")
        run.path.mkdir()
        text = make_profile(args, Path(tmp), channels_last)
        (run.path / "profile.toml").write_text(text)
        trainer = Trainer(run, validate_text(text, "bench.toml"))
        trainer.setup()
        trainer.steps_per_epoch = 1
        trainer.train_epoch(0, Position())  # warm-up step
        trainer.steps_per_epoch = args.steps
        start = time.perf_counter()
        trainer.train_epoch(1, Position(epoch=1, global_step=1))
        loop = args.steps * args.batch / (time.perf_counter() - start)

        if not step_only:
            return loop, float("nan")
        model = trainer.model
        views = [x.contiguous(memory_format=trainer.memory_format)
                 for x in next(trainer.epoch_batches(2, 0))[0]]
        start = time.perf_counter()
        for _ in range(args.steps):
            out = model(views)
            out["loss"].backward()
            trainer.opt.step()
            trainer.opt.zero_grad(set_to_none=True)
        step = args.steps * args.batch / (time.perf_counter() - start)
    return loop, step


def bench_lightly(args: argparse.Namespace) -> tuple[float, float]:
    import timm
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from lightly.utils.lars import LARS

    from sslterm.models.encoder import apply_small_stem

    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0,
                                min_scale=0.08)
    if args.data:
        dataset = torchvision.datasets.ImageFolder(Path(args.data) / "train", transform=transform)
    else:
        dataset = torchvision.datasets.FakeData(2048, (3, 32, 32), 10, transform=transform)
    workers = torch.get_num_threads()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True,
                                         drop_last=True, num_workers=workers,
                                         persistent_workers=True)
    encoder = apply_small_stem(timm.create_model(args.encoder, num_classes=0))
    model = torch.nn.Sequential(encoder, SimCLRProjectionHead(encoder.num_features, 512, 128))
    criterion = NTXentLoss(temperature=0.5)
    opt = LARS(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)

    def step(x0: torch.Tensor, x1: torch.Tensor) -> None:
        z = model(torch.cat([x0, x1]))
        loss = criterion(z[: len(x0)], z[len(x0):])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    batches = iter(loader)
    (x0, x1), _ = next(batches)
    step(x0, x1)  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        (x0, x1), _ = next(batches)
        step(x0, x1)
    loop = args.steps * args.batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(x0, x1)
    only = args.steps * args.batch / (time.perf_counter() - start)
    return loop, only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder with train/<class>/ (e.g. extracted CIFAR-10)")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.encoder} (small stem), batch {args.batch}, fp32, {args.steps} steps, "
          f"{args.threads} threads, data: {args.data or 'synthetic'}")
    ours_loop, ours_step = bench_sslterm(args)
    plain_loop, _ = bench_sslterm(args, channels_last=False, step_only=False)
    ref_loop, ref_step = bench_lightly(args)
    rows = [("full loop (img/s)", ours_loop, ref_loop),
            ("  same, NCHW like the ref", plain_loop, ref_loop),
            ("model step only (img/s)", ours_step, ref_step)]
    print(f"{'':28}{'sslterm':>12}{'lightly ref':>14}{'ratio':>8}")
    for label, ours, ref in rows:
        print(f"{label:28}{ours:12.1f}{ref:14.1f}{ours / ref:8.2f}x")
    print("target: full loop >= 1.0x")


if __name__ == "__main__":
    main()
