"""A differentiable all-gather.

``accelerator.gather`` / ``dist.all_gather`` cut the graph: negatives from other
processes would carry no gradient. Here the backward pass sums the incoming
gradients over all processes and keeps this process's slice, which is the
exact gradient of the global loss (DDP's gradient averaging then matches a
single process on the same global batch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        ctx.b = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.b : (ctx.rank + 1) * ctx.b]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all processes along dim 0, gradients flowing back to each."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGather.apply(x)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
