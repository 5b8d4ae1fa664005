"""Projection and prediction heads, framework-free: one MLP builder, each method's recipe.

Every head is an ``nn.Sequential`` of Linear, BatchNorm1d and ReLU layers, laid out as in
lightly's heads (a Linear has a bias only where no BatchNorm follows it), so weights and
outputs can be compared with lightly's one for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

LastNorm = Literal["none", "affine", "plain"]


def mlp(dims: Sequence[int], *, batch_norm: bool = True, last_norm: LastNorm = "none") -> nn.Sequential:
    """Linear layers through ``dims`` (``[in, hidden..., out]``), with BatchNorm (if asked)
    and ReLU after each hidden one; ``last_norm`` puts a BatchNorm after the output layer,
    with learnable affine parameters ("affine") or without ("plain", SimSiam and MoCo v3)."""
    if len(dims) < 2:
        raise ValueError(f"an MLP needs an input and an output width, got {list(dims)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=False)):
        last = i == len(dims) - 2
        norm = (last_norm != "none") if last else batch_norm
        layers.append(nn.Linear(a, b, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm1d(b, affine=not (last and last_norm == "plain")))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def projector(
    kind: Literal["mlp", "mlp_bn", "linear"], in_dim: int, hidden_dim: int, out_dim: int
) -> nn.Module:
    """SimCLR's head: ``mlp`` is the original experiment's Linear-ReLU-Linear (no BatchNorm,
    so a multi-process run computes the same function as a single process); ``mlp_bn`` is
    solo-learn's Linear-BN-ReLU-Linear."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return mlp([in_dim, hidden_dim, out_dim], batch_norm=kind == "mlp_bn")


def byol_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector and predictor alike: Linear-BN-ReLU-Linear."""
    return mlp([in_dim, hidden_dim, out_dim])


def simsiam_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimSiam's projector: three layers, BatchNorm on each, the last without affine."""
    return mlp([in_dim, hidden_dim, hidden_dim, out_dim], last_norm="plain")


def simsiam_predictor(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimSiam's bottleneck predictor: Linear-BN-ReLU-Linear."""
    return mlp([in_dim, hidden_dim, out_dim])


def mocov3_projector(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """MoCo v3's projector: BatchNorm on every layer, the output one without affine (the
    paper's code uses 2 layers for ResNets, 3 for ViTs)."""
    return mlp([in_dim, *[hidden_dim] * (layers - 1), out_dim], last_norm="plain")


def mocov3_predictor(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v3's predictor: Linear-BN-ReLU-Linear (no output BatchNorm, as in its code)."""
    return mlp([in_dim, hidden_dim, out_dim])


def barlowtwins_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Barlow Twins' projector: three Linear layers, BatchNorm and ReLU after the two hidden
    ones, a plain output (the loss standardises it)."""
    return mlp([in_dim, hidden_dim, hidden_dim, out_dim])


def vicreg_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """VICReg's projector ("expander"): the same three-layer shape as Barlow Twins'."""
    return mlp([in_dim, hidden_dim, hidden_dim, out_dim])


class DINOHead(nn.Module):
    """DINO's head: an MLP of ``layers`` Linear layers (3: ``in -> hidden -> hidden ->
    bottleneck``, 2: ``in -> hidden -> bottleneck``, 1: ``in -> bottleneck``; GELU, BatchNorm
    only if asked, as lightly's ``DINOProjectionHead`` and the paper's code, whose
    ``nlayers`` it is), l2 normalisation, then a
    weight-normalised bias-free Linear to ``output_dim`` prototypes. With
    ``norm_last_layer`` its gain stays fixed at 1, so each prototype is a unit vector and
    the outputs are cosines. The weight norm is torch's parametrization (``weight_g`` is
    ``parametrizations.weight.original0``, ``weight_v`` is ``original1``)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, output_dim: int, *,
                 batch_norm: bool = False, norm_last_layer: bool = True, layers: int = 3) -> None:
        super().__init__()
        widths = [in_dim] + [hidden_dim] * (layers - 1)
        mlp: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            mlp.append(nn.Linear(a, b, bias=not batch_norm))
            if batch_norm:
                mlp.append(nn.BatchNorm1d(b))
            mlp.append(nn.GELU())
        mlp.append(nn.Linear(widths[-1], bottleneck_dim))
        self.mlp = nn.Sequential(*mlp)
        for m in self.mlp:  # the paper's init; the last layer keeps Linear's own, as there
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, output_dim, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last)
        gain = self.last_layer.parametrizations.weight.original0
        nn.init.ones_(gain)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: Tensor, freeze_last_layer: bool = False) -> Tensor:
        """``freeze_last_layer`` passes a zero gradient to the last layer (DINO's
        ``cancel_gradients_last_layer`` in its first epoch): still a gradient, so DDP sees
        every parameter used, while its prototypes get no learning signal."""
        weight = self.last_layer.weight
        if freeze_last_layer:
            weight = weight.clone()
            weight.register_hook(lambda grad: grad.new_zeros(grad.shape))
        return nn.functional.linear(nn.functional.normalize(self.mlp(x), dim=-1), weight)
