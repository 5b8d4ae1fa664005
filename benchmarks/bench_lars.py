"""LARS step time on ResNet-50's parameters: the foreach path against the per-tensor loop.

    python benchmarks/bench_lars.py [--device cuda] [--steps 20] [--threads N]

Both optimizers get the same parameters (timm's resnet50, 161 tensors, 25.6 M values,
grouped as the trainer groups them: weights with decay and adaptation, biases and
norm parameters without) and the same gradients; the script times their ``step()``s alternately in
the same run, prints ms/step of each and their ratio, and checks both end with the same weights.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch

from sslterm.train.optim import LARS, param_groups


def timed_step(opt: LARS, params: list[torch.Tensor], grads: list[torch.Tensor],
               device: torch.device) -> float:
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = timm.create_model("resnet50").to(device)
    twin = copy.deepcopy(model)
    gen = torch.Generator(device=device).manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen, device=device) * 1e-3
             for p in model.parameters()]
    runs = []
    for net, foreach in ((model, False), (twin, True)):
        opt = LARS(param_groups(net, 1e-6), lr=4.8, trust_coefficient=1e-3, foreach=foreach)
        runs.append((opt, list(net.parameters()), []))
    for step in range(3 + args.steps):  # alternating, so a busy machine slows both alike
        for opt, params, times in runs:
            took = timed_step(opt, params, grads, device)
            if step >= 3:  # after warm-up: momentum buffers, kernels
                times.append(took)
    results = {name: statistics.median(times) for name, (_, _, times) in zip(
        ("loop", "foreach"), runs, strict=True)}
    diff = max((a - b).abs().max().item()
               for a, b in zip(model.parameters(), twin.parameters(), strict=True))
    n = sum(p.numel() for p in model.parameters())
    print(f"LARS on resnet50 ({len(grads)} tensors, {n / 1e6:.1f} M values), {device}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.steps} steps:")
    print(f"  loop     {results['loop'] * 1e3:8.2f} ms/step")
    print(f"  foreach  {results['foreach'] * 1e3:8.2f} ms/step")
    print(f"  loop / foreach = {results['loop'] / results['foreach']:.2f}x; "
          f"largest weight difference after {args.steps + 3} steps: {diff:.3g}")


if __name__ == "__main__":
    main()
