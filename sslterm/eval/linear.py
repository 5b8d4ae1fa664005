"""Linear probe on cached features: the original's linear-evaluation protocol.

SGD with momentum and weight decay, lr = base_lr * batch_size / 256, cosine decay per
step over all epochs, cross-entropy, top-1/top-5 on every split.

Features are used raw, not standardised, as in the original: the published numbers
this project measures against were made that way, and pooled features of an eval-mode
BatchNorm network are already well scaled. Features made elsewhere with a very
different scale can make the scaled lr too large; that shows up as a
:class:`NonFiniteError` naming the lr, never as a NaN metric.

Shuffling is a per-epoch permutation of indices into the feature tensor (no
DataLoader) and the SGD update is written out, so a step is one gather and two small
matrix products: 90 epochs over 50k x 512 features take seconds on a CPU
(benchmarks/bench_probe.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sslterm.eval.knn import NonFiniteError, check_finite, topk_accuracy
from sslterm.eval.precision import full_fp32

Split = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class ProbeResult:
    """Metrics per split ({"train": {"top1": %, "top5": %}, ...}) and the trained layer."""

    metrics: dict[str, dict[str, float]]
    weight: Tensor  # [C, D], CPU
    bias: Tensor  # [C], CPU
    losses: list[float]  # mean train loss per epoch


def probe_lr(step: int, total_steps: int, base_lr: float, batch_size: int) -> float:
    """lr at optimizer step ``step`` (0-based): linear batch scaling, then per-step cosine."""
    peak = base_lr * batch_size / 256
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _checked(name: str, split: Split, num_classes: int, dim: int | None) -> Split:
    features, labels = split
    if features.ndim != 2 or not features.is_floating_point():
        raise ValueError(f"{name} features must be a floating 2-D tensor [N, D]")
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"{name}: {features.shape[0]} features but labels of shape {tuple(labels.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{name} split is empty")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"{name} features have dim {features.shape[1]}, train features {dim}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"{name} labels must lie in [0, {num_classes})")
    check_finite(f"{name} features", features)
    return features.float(), labels.long()


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the step loop single-threaded on CPU.

    Each step is a handful of small, memory-bound ops, so extra threads buy little, while
    every op's thread barrier stalls whenever another process holds a core: on a shared
    2-core machine, 2 threads made the probe 3-5x slower than 1.
    """
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _sgd_step(
    params: list[Tensor],
    grads: tuple[Tensor, ...],
    velocity: list[Tensor],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """torch.optim.SGD's update (dampening 0, no Nesterov), without its ~2 s first-step
    import of torch._dynamo, which would dominate a probe of seconds."""
    for param, grad, buf in zip(params, grads, velocity, strict=True):
        buf.mul_(momentum).add_(grad).add_(param, alpha=weight_decay)
        param.sub_(buf, alpha=lr)


@torch.no_grad()
def _evaluate(weight: Tensor, bias: Tensor, split: Split, batch_size: int) -> dict[str, float]:
    features, labels = split
    device = weight.device
    logits = torch.cat(
        [
            F.linear(features[i : i + batch_size].to(device), weight, bias)
            for i in range(0, len(features), batch_size)
        ]
    )
    return topk_accuracy(logits, labels.to(device))


def train_linear_probe(
    train: Split,
    num_classes: int,
    *,
    epochs: int,
    batch_size: int,
    base_lr: float,
    weight_decay: float,
    momentum: float,
    seed: int = 0,
    evaluate: dict[str, Split] | None = None,
    device: str | torch.device = "cpu",
    eval_batch_size: int = 4096,
    on_epoch: Callable[[int, float], None] | None = None,
) -> ProbeResult:
    """Train a linear classifier on ``train`` = (features [N, D], labels [N]) and score it.

    Reports top-1/top-5 on "train" and on every split in ``evaluate``. The layer starts
    at zero (the problem is convex, so nothing is lost) and shuffling uses its own
    generator: a probe run mid-training never touches the global RNG. Runs in float32
    with autograd on, whatever autocast/no-grad context the caller is in.
    ``on_epoch(epoch, mean_loss)`` is called after each epoch (epoch counted from 1).
    Raises NonFiniteError if the loss stops being finite.
    """
    if epochs < 1 or batch_size < 1 or eval_batch_size < 1:
        raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
    evaluate = evaluate or {}
    if "train" in evaluate:
        raise ValueError('"train" is always evaluated; do not pass it in evaluate')
    device = torch.device(device)
    x, y = _checked("train", train, num_classes, None)
    x, y = x.to(device), y.to(device)
    others = {n: _checked(n, s, num_classes, x.shape[1]) for n, s in evaluate.items()}

    weight = torch.zeros(num_classes, x.shape[1], device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    velocity = [torch.zeros_like(weight), torch.zeros_like(bias)]
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    total_steps = epochs * math.ceil(n / batch_size)
    step = 0
    losses: list[float] = []
    with (
        torch.enable_grad(),
        full_fp32(device.type),
        _one_cpu_thread(device),
    ):
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator).to(device)
            loss_sum = torch.zeros((), device=device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                logits = F.linear(x.index_select(0, idx), weight, bias)
                loss = F.cross_entropy(logits, y.index_select(0, idx))
                grads = torch.autograd.grad(loss, [weight, bias])
                lr = probe_lr(step, total_steps, base_lr, batch_size)
                _sgd_step([weight, bias], grads, velocity, lr, momentum, weight_decay)
                loss_sum += loss.detach() * len(idx)
                step += 1
            mean_loss = loss_sum.item() / n
            if not math.isfinite(mean_loss):
                raise NonFiniteError(
                    f"linear probe diverged (loss {mean_loss} in epoch {epoch}) at peak lr "
                    f"{probe_lr(0, total_steps, base_lr, batch_size):g} = base_lr {base_lr:g} "
                    f"x batch {batch_size} / 256; lower probe.base_lr"
                )
            losses.append(mean_loss)
            if on_epoch is not None:
                on_epoch(epoch, mean_loss)

    weight, bias = weight.detach(), bias.detach()
    with full_fp32(device.type):
        metrics = {"train": _evaluate(weight, bias, (x, y), eval_batch_size)}
        metrics |= {name: _evaluate(weight, bias, s, eval_batch_size)
                    for name, s in others.items()}
    return ProbeResult(metrics=metrics, weight=weight.cpu(), bias=bias.cpu(), losses=losses)
