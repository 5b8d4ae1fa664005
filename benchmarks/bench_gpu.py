"""One-GPU throughput of the real trainer: CPU DataLoader path against the GPU-resident path.

ResNet-18 with the small-input stem, bf16 autocast, batch 512, on CIFAR-10 from
the image-folder tarball. For each path: images/s (each image = two views),
seconds per CIFAR-10 epoch (45,000 training images after the 90/10 split), peak
GPU memory, and an MFU estimate from a FLOP count of one training step
(torch.utils.flop_counter) against the card's dense bf16 peak. The timed steps are one
epoch of at most ``--steps`` (CIFAR-10 at batch 512 has 87), and every figure divides
by the steps that ran.

    tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar10
    python benchmarks/bench_gpu.py --data /tmp/cifar10            # ~3-6 minutes on an H100

``--device cpu --encoder test_resnet --batch 32 --steps 2`` runs the same code on a
CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import gc
import signal
import tempfile
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0}


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def profile_text(args: argparse.Namespace, out: Path, augment: str, compile_: bool) -> str:
    return f"""
name = "bench-{augment}"
[data]
dataset = "imagefolder"
root = "{args.data}"
download = false
image_size = 32
num_workers = {args.workers}
augment = "{augment}"
[model]
encoder = "{args.encoder}"
small_stem = "auto"
[simclr]
projector_hidden_dim = 2048
projector_dim = 128
temperature = 0.5
[train]
epochs = 1
batch_size = {args.batch}
optimizer = "lars"
base_lr = 0.175
precision = "{args.precision}"
channels_last = true
compile = {str(compile_).lower()}
warmup_epochs = 1
max_steps_per_epoch = {args.steps + args.warmup}
log_every = 50
val_interval = 0
online_probe = true
[probe]
enabled = false
[launch]
cpu = {str(args.device == "cpu").lower()}
output_dir = "{out}"
"""


def step_flops(trainer) -> float:  # noqa: ANN001
    """FLOPs of one forward + backward, counted eagerly (compile changes no FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    views, y = next(trainer.epoch_batches(0, 0))
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
        with trainer.acc.autocast():
            out = trainer.model(views, y)
        out["loss"].backward()
    trainer.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def timed_steps(args: argparse.Namespace, path: str, tmp: Path) -> dict[str, float]:
    """Warm up, then time one epoch of at most ``args.steps`` steps; the figures divide by
    the steps that ran (an epoch may hold fewer, e.g. 87 of CIFAR-10 at batch 512)."""
    from sslterm.profile.load import validate_text
    from sslterm.runs.store import RunDir
    from sslterm.train.engine import Position, Trainer

    cuda = torch.cuda.is_available() and args.device != "cpu"
    run = RunDir(tmp / "run")
    run.path.mkdir()
    augment, _, extra = path.partition("+")
    text = profile_text(args, tmp, augment, args.compile or extra == "compile")
    (run.path / "profile.toml").write_text(text)
    trainer = Trainer(run, validate_text(text, "bench.toml"))
    trainer.setup()
    flops = step_flops(trainer)
    trainer.steps_per_epoch = args.warmup
    trainer.train_epoch(0, Position())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.steps_per_epoch = args.steps
    pos = Position(epoch=1, global_step=args.warmup)
    start = time.perf_counter()
    trainer.train_epoch(1, pos)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    steps = pos.global_step - args.warmup
    ips = steps * args.batch / seconds
    return {
        "steps": steps,
        "seconds": seconds,
        "ips": ips,
        "epoch_s": len(trainer.splits.train) / ips,
        "flops_per_step": flops,
        "achieved_tflops": flops * steps / seconds / 1e12,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
    }


def measure(args: argparse.Namespace, path: str) -> dict[str, float]:
    """Time one data path: ``cpu``, ``gpu``, or either with ``+compile``; afterwards nothing
    of its Trainer is left, so the next path's peak memory is its own."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return timed_steps(args, path, Path(tmp))
    finally:
        signal.signal(signal.SIGTERM, previous)  # the Trainer's handler holds the Trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extracted CIFAR-10 image folder")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--compile", action="store_true", help="compile every path")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--paths", default="cpu,gpu,gpu+compile",
                        help="data paths to time, comma-separated: cpu, gpu, gpu+compile")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" \
        else "cpu"
    peak = peak_for(name)
    print(f"device: {name}; torch {torch.__version__}; {args.encoder} small stem, "
          f"{args.precision}, batch {args.batch}, up to {args.steps} timed steps (one epoch) "
          f"after {args.warmup}")
    results = {}
    for path in args.paths.split(","):
        r = results[path] = measure(args, path)
        mfu = f"{100 * r['achieved_tflops'] / peak:.1f}%" if peak else "n/a"
        print(f"{path:>11} path: {r['ips']:10,.0f} img/s  {r['epoch_s']:7.2f} s/epoch  "
              f"peak mem {r['peak_mem_gib']:.2f} GiB  {r['achieved_tflops']:.1f} TFLOP/s  "
              f"MFU {mfu}  ({r['flops_per_step'] / 1e12:.3f} TFLOP/step, {r['steps']} steps)",
              flush=True)
    if "cpu" in results and "gpu" in results:
        print(f"gpu-resident / cpu-dataloader: {results['gpu']['ips'] / results['cpu']['ips']:.2f}x")
    print("target: >= 12,000 img/s on one H100 (about 4 s per CIFAR-10 epoch)")


if __name__ == "__main__":
    main()
