"""Barlow Twins and VICReg: losses and heads against lightly's on the same inputs (values and
gradients), both methods over a few optimizer steps against references assembled from
lightly's modules, and the global-batch statistics of two processes against one."""

from __future__ import annotations

import copy

import pytest
import tomlkit
import torch
from methodhelpers import conv_encoder, seeded_views, step_alike
from torch import nn

from sslterm.methods.barlowtwins import BarlowTwins
from sslterm.methods.losses import barlow_twins_loss, vicreg_loss, vicreg_terms
from sslterm.methods.registry import get_method
from sslterm.methods.vicreg import VICReg
from sslterm.models import heads
from sslterm.profile.schema import BarlowTwinsConfig, VICRegConfig

lightly_heads = pytest.importorskip("lightly.models.modules.heads")
from lightly.loss import BarlowTwinsLoss, VICRegLoss  # noqa: E402
from lightly.loss import vicreg_loss as lightly_vicreg  # noqa: E402
from test_method_parts import _same_function  # noqa: E402

BARLOW_CFG = BarlowTwinsConfig(projector_hidden_dim=24, projector_dim=12, lambda_offdiag=0.02,
                               scale_loss=0.1)
VICREG_CFG = VICRegConfig(projector_hidden_dim=24, projector_dim=12, invariance_weight=25.0,
                          variance_weight=20.0, covariance_weight=2.0)
STEPS = 3


def _embeddings(seed: int = 0, n: int = 16, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated views with per-dimension offsets and scales, so that standardising and
    centring matter, and some dimensions' std below 1, so that VICReg's hinge is active."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 3.0, d)
    base = torch.randn(n, d, generator=g) * scale + torch.arange(d)
    return base, base + 0.5 * torch.randn(n, d, generator=g) * scale


def _grads(fn, *inputs):
    """``fn(*inputs)`` and the gradients of its first return value with respect to each input."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    return loss.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_barlow_twins_loss_equals_lightly_values_and_gradients(lam):
    z1, z2 = _embeddings()
    ours, ours_grads = _grads(lambda a, b: barlow_twins_loss(a, b, lam), z1, z2)
    theirs, their_grads = _grads(BarlowTwinsLoss(lambda_param=lam), z1, z2)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(ours_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_barlow_twins_scale_is_linear_and_the_terms_make_the_loss():
    z1, z2 = _embeddings(1)
    loss, on_diag, off_diag = barlow_twins_loss(z1, z2, 0.02)
    torch.testing.assert_close(loss, on_diag + 0.02 * off_diag)
    assert on_diag > 0 and off_diag > 0
    scaled, scaled_grads = _grads(lambda a, b: barlow_twins_loss(a, b, 0.02, scale=0.1), z1, z2)
    _, grads = _grads(lambda a, b: barlow_twins_loss(a, b, 0.02), z1, z2)
    torch.testing.assert_close(scaled, 0.1 * loss)
    for a, b in zip(scaled_grads, grads, strict=True):
        torch.testing.assert_close(a, 0.1 * b)
    # identical views: each dimension correlates perfectly with itself, on_diag is ~0
    _, on_same, _ = barlow_twins_loss(z1, z1, 0.02)
    assert on_same.item() < 1e-3


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_vicreg_loss_equals_lightly_values_and_gradients(weights):
    z1, z2 = _embeddings(3)
    ours, ours_grads = _grads(lambda a, b: vicreg_loss(a, b, *weights), z1, z2)
    lam, mu, nu = weights
    theirs, their_grads = _grads(VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu), z1, z2)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(ours_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b)


def solo_learn_variance(z1, z2, eps=1e-4):
    """solo-learn's ``variance_loss`` (solo/losses/vicreg.py), written out: the hinge of
    each view's per-dimension std, summed over the two views."""
    std1, std2 = torch.sqrt(z1.var(dim=0) + eps), torch.sqrt(z2.var(dim=0) + eps)
    return torch.relu(1 - std1).mean() + torch.relu(1 - std2).mean()


def test_vicreg_variance_sum_is_solo_learns():
    z1, z2 = _embeddings(5)
    _, variance, _ = vicreg_terms(z1, z2, variance_sum=True)
    torch.testing.assert_close(variance, solo_learn_variance(z1, z2))
    loss, inv, var, cov = vicreg_loss(z1, z2, 25.0, 25.0, 1.0, variance_sum=True)
    torch.testing.assert_close(loss, 25.0 * inv + 25.0 * solo_learn_variance(z1, z2) + cov)
    # the control: the default (the paper's code, lightly) is half of it
    torch.testing.assert_close(vicreg_terms(z1, z2)[1], 0.5 * solo_learn_variance(z1, z2))


def test_vicreg_terms_equal_lightlys_and_each_is_active():
    z1, z2 = _embeddings(4)
    invariance, variance, covariance = vicreg_terms(z1, z2)
    torch.testing.assert_close(invariance, lightly_vicreg.invariance_loss(z1, z2))
    torch.testing.assert_close(variance, 0.5 * (lightly_vicreg.variance_loss(z1)
                                                + lightly_vicreg.variance_loss(z2)))
    torch.testing.assert_close(covariance, lightly_vicreg.covariance_loss(z1)
                               + lightly_vicreg.covariance_loss(z2))
    assert min(invariance.item(), variance.item(), covariance.item()) > 0
    # spread, decorrelated views with std >= 1: the variance hinge is off
    q, _ = torch.linalg.qr(torch.randn(64, 8, generator=torch.Generator().manual_seed(2)))
    assert vicreg_terms(q * 20, q * 20)[1].item() == 0.0


@pytest.mark.parametrize("loss", [lambda a, b: barlow_twins_loss(a, b, 0.0051, 0.1),
                                  lambda a, b: vicreg_loss(a, b)], ids=["barlowtwins", "vicreg"])
def test_redundancy_losses_are_float32_under_autocast(loss):
    """bf16 embeddings (a bf16 projector's output) give, under autocast, the loss of the same
    values in float32: the statistics and the correlation are not computed in bf16."""
    z1, z2 = _embeddings(5, n=64, d=256)
    z1, z2 = z1.bfloat16(), z2.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = loss(z1, z2)
    reference = loss(z1.float(), z2.float())
    assert all(t.dtype == torch.float32 for t in terms)
    for a, b in zip(terms, reference, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(lambda: heads.barlowtwins_projector(32, 48, 16),
      lambda: lightly_heads.BarlowTwinsProjectionHead(32, 48, 16)),
     (lambda: heads.vicreg_projector(32, 48, 16),
      lambda: lightly_heads.VICRegProjectionHead(32, 48, 16))],
    ids=["barlowtwins-projector", "vicreg-projector"],
)
def test_heads_equal_lightly(ours, theirs):
    torch.manual_seed(0)
    a, b = ours(), theirs()
    _same_function(a, b, 32)


def _views(step: int) -> list[torch.Tensor]:
    return seeded_views(200 + step)


class LightlyTwins(nn.Module):
    """lightly's examples (examples/pytorch/barlowtwins.py, vicreg.py): backbone, projection
    head and loss, each view through the model separately, around a copy of our weights."""

    def __init__(self, ours: nn.Module, head: nn.Module, criterion: nn.Module,
                 scale: float = 1.0) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(ours.encoder)
        self.projection_head = head
        sd = head.state_dict()
        head.load_state_dict(dict(zip(sd, ours.projector.state_dict().values(), strict=True)))
        self.criterion, self.scale = criterion, scale

    def forward(self, x):
        return self.projection_head(self.backbone(x))

    def loss(self, views):
        return self.criterion(self(views[0]), self(views[1])) * self.scale


def _barlow_reference(ours: BarlowTwins) -> LightlyTwins:
    c = BARLOW_CFG
    return LightlyTwins(ours, lightly_heads.BarlowTwinsProjectionHead(8, c.projector_hidden_dim,
                                                                      c.projector_dim),
                        BarlowTwinsLoss(lambda_param=c.lambda_offdiag), scale=c.scale_loss)


def _vicreg_reference(ours: VICReg) -> LightlyTwins:
    c = VICREG_CFG
    return LightlyTwins(ours, lightly_heads.VICRegProjectionHead(8, c.projector_hidden_dim,
                                                                 c.projector_dim),
                        VICRegLoss(lambda_param=c.invariance_weight, mu_param=c.variance_weight,
                                   nu_param=c.covariance_weight))


@pytest.mark.parametrize(
    ("cls", "config", "reference", "scalars"),
    [(BarlowTwins, BARLOW_CFG, _barlow_reference, {"on_diag", "off_diag"}),
     (VICReg, VICREG_CFG, _vicreg_reference, {"invariance", "variance", "covariance"})],
    ids=["barlowtwins", "vicreg"],
)
def test_method_trains_like_the_lightly_reference(cls, config, reference, scalars):
    torch.manual_seed(0)
    ours = cls.create(conv_encoder(), 8, config).train()
    theirs = reference(ours).train()
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.02)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.02)
    losses = []
    params = (list(ours.parameters()), list(theirs.parameters()))
    for step in range(STEPS):
        # gradient tolerance: float32 sums in another order
        out = step_alike(ours, theirs, _views(step), params, (opt_a, opt_b), rtol=1e-4, atol=1e-5)
        assert set(out) == {"loss", "ssl_loss", "features", *scalars}
        assert all(out[k].dim() == 0 and not out[k].requires_grad for k in scalars)
        assert ours.after_step(step, STEPS) == {}
        losses.append(out["loss"].item())
    assert losses[0] != losses[-1]


@pytest.mark.parametrize(
    ("name", "config", "scalars"),
    [("barlowtwins", BARLOW_CFG, {"on_diag", "off_diag"}),
     ("vicreg", VICREG_CFG, {"invariance", "variance", "covariance"})],
)
def test_val_metrics_are_the_training_loss_and_its_terms(name, config, scalars):
    torch.manual_seed(0)
    method = get_method(name).create(conv_encoder(), 8, config).eval()
    assert method.eval_encoder() is method.encoder
    assert {k.split(".")[0] for k in method.state_dict()} == {"encoder", "projector"}
    assert [v.size for v in method.views()] == [None, None]
    assert method.shape_keys == ("projector_hidden_dim", "projector_dim")
    views = _views(0)
    with torch.no_grad():
        metrics = method.val_metrics(views)
        train = method.training_step(views)
    assert set(metrics) == {"loss", "cosine", "z_std", *scalars}
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    for key in ("loss", *scalars):
        torch.testing.assert_close(metrics[key], train[key])


def test_composer_shows_the_chosen_methods_section():
    from sslterm.tui.screens.composer import method_fields

    for method, section, keys in [
        ("vicreg", "vicreg", {"projector_hidden_dim", "projector_dim", "invariance_weight",
                              "variance_weight", "covariance_weight"}),
        ("barlowtwins", "barlowtwins", {"projector_hidden_dim", "projector_dim",
                                        "lambda_offdiag", "scale_loss"}),
    ]:
        fields = method_fields(tomlkit.parse(f'[model]\nmethod = "{method}"\n'))
        shown = {f.key for f in fields}
        assert {f"{section}.{k}" for k in keys} <= shown
        others = {"simclr", "byol", "vicreg", "barlowtwins"} - {section}
        assert not any(f.section in others for f in fields)
        assert all(f.help for f in fields if f.section == section)


# --- two processes against one -------------------------------------------------------------

HALF = 6


def _twin_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2 * HALF, 5, generator=g) * torch.linspace(0.5, 2.0, 5)
    return x, x + 0.3 * torch.randn(2 * HALF, 5, generator=g)


def _twin_methods() -> list[nn.Module]:
    """Both methods with an identity encoder and a linear projector (no BatchNorm), so the
    loss's own batch statistics are the only thing two processes could get wrong."""
    torch.manual_seed(0)
    proj = nn.Linear(5, 4)
    return [BarlowTwins(nn.Identity(), copy.deepcopy(proj), 0.02, 0.1),
            VICReg(nn.Identity(), copy.deepcopy(proj), 25.0, 25.0, 1.0)]


def _twin_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """One of two gloo processes with half the batch: each method's training loss and its
    DDP-averaged gradients; its local-statistics loss (val_metrics); and lightly's losses
    with gather_distributed on the same half."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        x1, x2 = _twin_batch()
        part = slice(rank * HALF, (rank + 1) * HALF)
        views = [x1[part], x2[part]]
        saved = {}
        for method in _twin_methods():
            name = type(method).__name__
            out = method.training_step(views)
            out["loss"].backward()
            grads = [p.grad.clone() for p in method.parameters()]
            for g in grads:
                dist.all_reduce(g)
                g /= world
            with torch.no_grad():
                local = method.val_metrics(views)["loss"]
            saved[name] = {"loss": out["loss"].detach(), "grads": grads, "local": local}
        with torch.no_grad():
            z1, z2 = (_twin_methods()[0].projector(v) for v in views)
            saved["lightly_barlow"] = BarlowTwinsLoss(0.02, gather_distributed=True)(z1, z2)
            saved["lightly_vicreg"] = VICRegLoss(gather_distributed=True)(z1, z2)
        torch.save(saved, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two real processes: tens of seconds on the loaded 2-core machine
def test_two_processes_compute_the_global_batch_loss_of_one(tmp_path):
    """Each process holds half the batch: the loss on every rank and the DDP-averaged
    gradients equal one process on the whole batch. Negative controls: the same loss on each
    half alone (val_metrics, local statistics), averaged over the ranks as DDP would, and
    lightly's distributed Barlow Twins (local standardisation, averaged correlation) differ;
    lightly's distributed VICReg gathers as we do and agrees."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_twin_rank, args=(2, port, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    views = list(_twin_batch())
    for method in _twin_methods():
        name = type(method).__name__
        whole = method.training_step(views)["loss"]
        whole.backward()
        for r in ranks:
            torch.testing.assert_close(r[name]["loss"], whole.detach(), rtol=1e-5, atol=1e-6)
            for a, p in zip(r[name]["grads"], method.parameters(), strict=True):
                torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
        local = sum(r[name]["local"] for r in ranks) / 2
        assert abs(local.item() - whole.item()) > 1e-2 * abs(whole.item()), name
    barlow, vicreg = (m.projector for m in _twin_methods())
    with torch.no_grad():
        whole_barlow = barlow_twins_loss(barlow(views[0]), barlow(views[1]), 0.02)[0]
        whole_vicreg = vicreg_loss(vicreg(views[0]), vicreg(views[1]))[0]
    for r in ranks:
        assert abs(r["lightly_barlow"].item() - whole_barlow.item()) > 1e-2 * whole_barlow.item()
    # lightly's invariance term is each half's own: only its mean over the ranks is global
    torch.testing.assert_close(sum(r["lightly_vicreg"] for r in ranks) / 2, whole_vicreg,
                               rtol=1e-5, atol=1e-6)
