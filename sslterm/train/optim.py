"""Optimizers and the learning-rate schedule, as small pure pieces.

LARS follows SimCLR's own implementation (You et al. 2017 as used in SimCLR's
``lars_optimizer.py``): weight decay is added to the gradient first, ``u = g + wd * w``,
and the per-tensor trust ratio is ``eta * ||w|| / ||u||`` (``||g + wd * w||``), so the
update before momentum and lr is ``eta * ||w|| * u / ||u||``. Biases and normalisation
parameters (1-D tensors, ``lars_exclude`` groups) get neither weight decay nor adaptation,
and a tensor with ``||w|| = 0`` or ``||u|| = 0`` gets ratio 1.

At weight decay 0 the ratio is ``eta * ||w|| / ||g||``: the step still adapts per tensor.

``clip_lr`` (solo-learn's ``clip_lars_lr``, on in its CIFAR recipes) replaces the ratio by
``min(ratio / lr, 1)``, so the step is ``min(eta * ||w|| / ||u||, lr) * u`` rather than
``lr * ratio * u``: plain SGD at the scheduled lr where the trust ratio exceeds the lr (a
small gradient), LARS's relative step ``eta`` elsewhere, whatever the lr.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling.

    Param groups with ``lars_exclude=True`` get plain SGD with momentum and no
    weight decay. ``foreach`` (the default) updates each group's tensors with
    ``torch._foreach_*`` operations, a few kernels per group instead of about ten per
    tensor; ``foreach=False`` is the per-tensor loop it equals step for step
    (benchmarks/bench_lars.py times both).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = 1e-8,
        clip_lr: bool = False,
        foreach: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_exclude=False,
            clip_lr=clip_lr,
        )
        super().__init__(params, defaults)
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not self.foreach:
                for p in params:
                    self._loop_step(group, p)
                continue
            by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for p in params:
                by_kind.setdefault((p.device, p.dtype), []).append(p)
            for same in by_kind.values():
                self._foreach_step(group, same)
        return loss

    def _loop_step(self, group: dict, p: Tensor) -> None:
        update = lars_update(
            p, p.grad, group["weight_decay"], group["trust_coefficient"], group["eps"],
            group["lars_exclude"], group["lr"] if group["clip_lr"] else None,
        )
        state = self.state[p]
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(update).detach()
        else:
            buf.mul_(group["momentum"]).add_(update)
        p.add_(buf, alpha=-group["lr"])

    def _foreach_step(self, group: dict, params: list[Tensor]) -> None:
        """:meth:`_loop_step` for tensors of one device and dtype, in foreach operations."""
        lr = group["lr"]
        updates = [p.grad for p in params]
        adapt = [i for i, p in enumerate(params) if not group["lars_exclude"] and p.ndim > 1]
        if adapt:
            weights = [params[i] for i in adapt]
            scaled = torch._foreach_add([updates[i] for i in adapt], weights,
                                        alpha=group["weight_decay"])
            w_norm = torch.stack(torch._foreach_norm(weights))
            u_norm = torch.stack(torch._foreach_norm(scaled))
            ratio = torch.where((w_norm > 0) & (u_norm > 0),
                                group["trust_coefficient"] * w_norm / (u_norm + group["eps"]),
                                torch.ones_like(w_norm))
            if group["clip_lr"] and lr > 0:
                ratio = (ratio / lr).clamp(max=1.0)
            torch._foreach_mul_(scaled, list(ratio.unbind()))
            for i, update in zip(adapt, scaled, strict=True):
                updates[i] = update
        bufs, grown, grown_by = [], [], []
        for p, update in zip(params, updates, strict=True):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.clone(update).detach()
            else:
                grown.append(state["momentum_buffer"])
                grown_by.append(update)
            bufs.append(state["momentum_buffer"])
        if grown:
            torch._foreach_mul_(grown, group["momentum"])
            torch._foreach_add_(grown, grown_by)
        torch._foreach_add_(params, bufs, alpha=-lr)


def lars_update(
    p: Tensor, grad: Tensor, weight_decay: float, trust: float, eps: float, exclude: bool,
    clip_lr: float | None = None,
) -> Tensor:
    """The LARS direction for one tensor, before momentum and lr. ``clip_lr``: the step's
    lr, to clip the ratio to ``min(ratio / lr, 1)`` (solo-learn's ``clip_lars_lr``)."""
    if exclude or p.ndim <= 1:
        return grad
    update = grad.add(p, alpha=weight_decay)
    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
    ratio = torch.where(
        (w_norm > 0) & (u_norm > 0), trust * w_norm / (u_norm + eps), torch.ones_like(w_norm)
    )
    if clip_lr is not None and clip_lr > 0:
        ratio = (ratio / clip_lr).clamp(max=1.0)
    return update * ratio


def param_groups(model: nn.Module, weight_decay: float, probe: nn.Module | None = None,
                 fixed_lr: Iterable[nn.Parameter] = ()) -> list[dict]:
    """Weights get decay; biases/norm parameters (1-D) and ``probe`` (the engine's online
    probe, recognised by identity, not by name) do not. ``fixed_lr`` parameters (SimSiam's
    predictor) go in groups of their own marked ``fixed_lr``: the engine keeps them at the
    peak lr, with no warmup or decay."""
    in_probe = {id(p) for p in probe.parameters()} if probe is not None else set()
    fixed = {id(p) for p in fixed_lr}
    decay, no_decay, probe_params, fixed_decay, fixed_no_decay = [], [], [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in in_probe:
            probe_params.append(p)
        elif id(p) in fixed:
            (fixed_no_decay if p.ndim <= 1 else fixed_decay).append(p)
        elif p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "name": "no_decay"},
        {"params": fixed_decay, "weight_decay": weight_decay, "name": "fixed_lr_decay",
         "fixed_lr": True},
        {"params": fixed_no_decay, "weight_decay": 0.0, "lars_exclude": True,
         "name": "fixed_lr_no_decay", "fixed_lr": True},
    ]
    if probe_params:
        groups.append({"params": probe_params, "weight_decay": 0.0, "lars_exclude": True,
                       "name": "probe"})
    return [g for g in groups if g["params"]]


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float, mode: str) -> None:
    """Scale gradients down to ``max_norm``: ``global``, one norm over all of them (torch's
    ``clip_grad_norm_``); ``per_tensor``, each tensor by its own norm (the DINO paper's
    ``clip_gradients``: ``g * min(1, max_norm / (||g|| + 1e-6))``)."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(with_grad, max_norm, foreach=True)
        return
    grads = [p.grad for p in with_grad]
    norms = torch._foreach_norm(grads)
    scales = [(max_norm / (n + 1e-6)).clamp_(max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)


def scaled_lr(base_lr: float, batch: int, scaling: str) -> float:
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch)
    if scaling == "linear":
        return base_lr * batch / 256
    return base_lr


def lr_at(step: int, total: int, warmup: int, peak: float, min_ratio: float = 0.0) -> float:
    """Linear warmup from ~0 to ``peak`` over ``warmup`` steps, then cosine to ``min_ratio*peak``.

    ``step`` counts optimizer steps from 0; the value is the lr used *for* that step.
    """
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    low = peak * min_ratio
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    name: str,
    groups: list[dict],
    lr: float,
    *,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float,
    betas: tuple[float, float],
    fused: bool = False,
    clip_lr: bool = False,
) -> torch.optim.Optimizer:
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient, clip_lr=clip_lr)
    clean = [{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups]
    if name == "sgd":
        return torch.optim.SGD(clean, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               **({"fused": True} if fused else {"foreach": True}))
    return torch.optim.AdamW(clean, lr=lr, betas=betas, weight_decay=weight_decay,
                             **({"fused": True} if fused else {"foreach": True}))
