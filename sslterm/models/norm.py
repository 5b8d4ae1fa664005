"""BatchNorm over the global batch of every process, on any device.

``model.sync_batchnorm`` asks for batch statistics over all processes. On GPUs that is
torch's SyncBatchNorm; on CPUs (gloo) torch's refuses to run, so there each BatchNorm
becomes a ``GlobalBatchNorm``: the per-channel sums and counts, then the squared
deviations from the global mean, are all-reduced with autograd
(``torch.distributed.nn.functional.all_reduce``), so values and gradients are those of one
process holding the whole batch. It is what lets a
two-process CPU run of BYOL, MoCo v3 or SimSiam (BatchNorm in their heads) train exactly
like one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.nn.functional import all_reduce
from torch.nn.modules.batchnorm import _BatchNorm


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm (any input rank) whose training statistics span all processes."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = torch.full((1,), x.numel() / c, device=x.device)
        sums = all_reduce(torch.cat([x32.sum(dims), count]))
        n = sums[-1]
        mean = sums[:c] / n
        centred = x32 - mean.view(shape)
        # a second pass about the global mean: E[x^2] - E[x]^2 loses the variance to float32
        # cancellation when |mean| >> std, where BatchNorm's own kernels do not
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n.item())
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: float) -> None:
        """As BatchNorm: unbiased variance, ``momentum`` or (None) a cumulative average."""
        self.num_batches_tracked += 1
        m = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        self.running_var.lerp_((var * n / max(n - 1, 1)).to(self.running_var.dtype), m)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a GlobalBatchNorm sharing its parameters
    (``requires_grad`` included: a frozen teacher stays frozen) and statistics, so the
    state-dict keys and the optimizer's parameters are unchanged."""
    if isinstance(module, _BatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        for name, value in [*module.named_parameters(recurse=False),
                            *module.named_buffers(recurse=False)]:
            setattr(out, name, value)
        return out.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Global-batch BatchNorm for ``model.sync_batchnorm``: torch's SyncBatchNorm on CUDA,
    GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return convert_global_batchnorm(module)
