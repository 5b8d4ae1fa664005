"""BYOL, MoCo v3 and SimSiam as whole methods against references assembled from lightly's
modules (heads, losses, update_momentum, cosine_schedule) as in lightly's own examples,
with the same weights: losses, every gradient and the teacher after each step, over a few
optimizer steps so the teacher has moved away from the student."""

from __future__ import annotations

import copy

import pytest
import torch
from methodhelpers import conv_encoder, seeded_views, step_alike
from torch import nn

from sslterm.methods.byol import BYOL
from sslterm.methods.losses import view_agreement
from sslterm.methods.mocov3 import MoCoV3
from sslterm.methods.registry import get_method
from sslterm.methods.simsiam import SimSiam
from sslterm.profile.schema import BYOLConfig, MoCoV3Config, SimSiamConfig

lightly_heads = pytest.importorskip("lightly.models.modules.heads")
from lightly.loss import NegativeCosineSimilarity  # noqa: E402
from lightly.models.utils import deactivate_requires_grad, update_momentum  # noqa: E402
from lightly.utils.scheduler import cosine_schedule  # noqa: E402

STEPS = 3
BYOL_CFG = BYOLConfig(projector_hidden_dim=24, projector_dim=12, predictor_hidden_dim=20,
                           momentum_start=0.9, momentum_end=1.0)
MOCO_CFG = MoCoV3Config(projector_hidden_dim=24, projector_dim=12, projector_layers=2,
                           predictor_hidden_dim=20, temperature=0.2, momentum_start=0.9,
                           momentum_end=1.0)
SIMSIAM_CFG = SimSiamConfig(projector_hidden_dim=24, projector_dim=12, predictor_hidden_dim=6)


def _views(step: int) -> list[torch.Tensor]:
    return seeded_views(100 + step)


def _copy_into(theirs: nn.Module, ours: nn.Module) -> None:
    """Load our head's weights into lightly's (same layout, layer for layer)."""
    sd = theirs.state_dict()
    theirs.load_state_dict(dict(zip(sd, ours.state_dict().values(), strict=True)))


class LightlyBYOL(nn.Module):
    """lightly's BYOL example (examples/pytorch/byol.py) around a copy of our weights."""

    def __init__(self, ours: BYOL, c) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(ours.encoder)
        self.projection_head = lightly_heads.BYOLProjectionHead(8, c.projector_hidden_dim,
                                                                c.projector_dim)
        self.prediction_head = lightly_heads.BYOLPredictionHead(
            c.projector_dim, c.predictor_hidden_dim, c.projector_dim)
        _copy_into(self.projection_head, ours.projector)
        _copy_into(self.prediction_head, ours.predictor)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def loss(self, views):
        """On solo-learn's scale (``byol_loss_func`` summed over both pairs, 2 - 2 cos each),
        not the example's half sum of negative cosines."""
        x0, x1 = views
        p0, z0 = self(x0), self.forward_momentum(x0)
        p1, z1 = self(x1), self.forward_momentum(x1)
        return (2 + 2 * self.criterion(p0, z1)) + (2 + 2 * self.criterion(p1, z0))

    def momentum_step(self, step, total, c):
        m = cosine_schedule(step, total, c.momentum_start, c.momentum_end)
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        return m

    def student(self):
        return [self.backbone, self.projection_head, self.prediction_head]

    def teacher(self):
        return [self.backbone_momentum, self.projection_head_momentum]


class LightlyMoCoV3(LightlyBYOL):
    """MoCo v3 from lightly's heads (MoCoProjectionHead with BatchNorm, BYOLPredictionHead)
    and the loss verbatim from the paper's code (moco-v3/moco/builder.py, ``contrastive_loss``).
    lightly's projection head gives its output BatchNorm affine parameters that MoCo v3 does
    not have: they stay frozen at (1, 0), where the two compute the same function."""

    def __init__(self, ours: MoCoV3, c) -> None:
        nn.Module.__init__(self)
        self.t = c.temperature
        self.backbone = copy.deepcopy(ours.encoder)
        self.projection_head = lightly_heads.MoCoProjectionHead(
            8, c.projector_hidden_dim, c.projector_dim, num_layers=c.projector_layers,
            batch_norm=True)
        out_norm = self.projection_head.layers[-1]
        out_norm.requires_grad_(False)
        own = [k for k in self.projection_head.state_dict()
               if not k.startswith(f"layers.{len(self.projection_head.layers) - 1}.")
               or "running" in k or "num_batches" in k]
        self.projection_head.load_state_dict(
            {**self.projection_head.state_dict(),
             **dict(zip(own, ours.projector.state_dict().values(), strict=True))})
        self.prediction_head = lightly_heads.BYOLPredictionHead(
            c.projector_dim, c.predictor_hidden_dim, c.projector_dim)
        _copy_into(self.prediction_head, ours.predictor)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def contrastive_loss(self, q, k):
        q = nn.functional.normalize(q, dim=1)
        k = nn.functional.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / self.t
        labels = torch.arange(q.shape[0], dtype=torch.long)
        return nn.CrossEntropyLoss()(logits, labels) * (2 * self.t)

    def loss(self, views):
        x1, x2 = views
        q1, q2 = self(x1), self(x2)
        with torch.no_grad():
            k1, k2 = self.forward_momentum(x1), self.forward_momentum(x2)
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)


class LightlySimSiam(nn.Module):
    """lightly's SimSiam example (examples/pytorch/simsiam.py) around a copy of our weights."""

    def __init__(self, ours: SimSiam, c) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(ours.encoder)
        self.projection_head = lightly_heads.SimSiamProjectionHead(8, c.projector_hidden_dim,
                                                                   c.projector_dim)
        self.prediction_head = lightly_heads.SimSiamPredictionHead(
            c.projector_dim, c.predictor_hidden_dim, c.projector_dim)
        _copy_into(self.projection_head, ours.projector)
        _copy_into(self.prediction_head, ours.predictor)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x):
        z = self.projection_head(self.backbone(x))
        return z.detach(), self.prediction_head(z)

    def loss(self, views):
        (z0, p0), (z1, p1) = self(views[0]), self(views[1])
        return 0.5 * (self.criterion(z0, p1) + self.criterion(z1, p0))

    def momentum_step(self, step, total, c):
        return None

    def student(self):
        return [self.backbone, self.projection_head, self.prediction_head]

    def teacher(self):
        return []


def _trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def _ours_teacher(method: nn.Module) -> list[nn.Module]:
    return [method.teacher.encoder, method.teacher.projector] if hasattr(method, "teacher") else []


def _shared_state(modules: list[nn.Module], skip_affine_out_norm: bool) -> list[torch.Tensor]:
    """Parameters and buffers in order, less lightly's frozen MoCo output-norm affine."""
    out = []
    for m in modules:
        for name, t in m.state_dict().items():
            frozen = (skip_affine_out_norm and isinstance(m, lightly_heads.MoCoProjectionHead)
                      and name.startswith(f"layers.{len(m.layers) - 1}.")
                      and name.split(".")[-1] in ("weight", "bias"))
            if not frozen:
                out.append(t)
    return out


@pytest.mark.parametrize(
    ("cls", "config", "reference"),
    [(BYOL, BYOL_CFG, LightlyBYOL), (MoCoV3, MOCO_CFG, LightlyMoCoV3),
     (SimSiam, SIMSIAM_CFG, LightlySimSiam)],
    ids=["byol", "mocov3", "simsiam"],
)
def test_method_trains_like_the_lightly_reference(cls, config, reference):
    torch.manual_seed(0)
    ours = cls.create(conv_encoder(), 8, config).train()
    theirs = reference(ours, config).train()
    opt_a = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.5)
    opt_b = torch.optim.SGD(_trainable(theirs.student()), lr=0.5)
    losses = []
    params = ([p for p in ours.parameters() if p.requires_grad], _trainable(theirs.student()))
    for step in range(STEPS):
        out = step_alike(ours, theirs, _views(step), params, (opt_a, opt_b))
        logged = ours.after_step(step, STEPS)
        m = theirs.momentum_step(step, STEPS, config)
        assert logged == ({} if m is None else {"momentum": pytest.approx(m)})
        skip = cls is MoCoV3
        for a, b in zip(_shared_state(_ours_teacher(ours), skip),
                        _shared_state(theirs.teacher(), skip), strict=True):
            torch.testing.assert_close(a, b)
        losses.append(out["loss"].item())
    assert losses[0] != losses[-1]
    for teacher, student in zip(_ours_teacher(ours), [ours.encoder, ours.projector],
                                strict=False):  # the teacher is a moving average, not a copy
        assert not all(torch.equal(a, b) for a, b in zip(teacher.parameters(),
                                                         student.parameters(), strict=True))


@pytest.mark.parametrize("name", ["byol", "mocov3", "simsiam"])
def test_teacher_is_frozen_and_evaluation_uses_the_student(name):
    config = {"byol": BYOL_CFG, "mocov3": MOCO_CFG, "simsiam": SIMSIAM_CFG}[name]
    method = get_method(name).create(conv_encoder(), 8, config)
    assert method.eval_encoder() is method.encoder
    teacher = _ours_teacher(method)
    assert all(not p.requires_grad for m in teacher for p in m.parameters())
    keys = {k.split(".")[0] for k in method.state_dict()}
    assert keys == ({"encoder", "projector", "predictor", "teacher"} if teacher
                    else {"encoder", "projector", "predictor"})
    assert [v.size for v in method.views()] == [None, None]


@pytest.mark.parametrize(
    ("cls", "config", "names"),
    [(BYOL, BYOL_CFG, {"loss", "cosine", "z_std"}), (MoCoV3, MOCO_CFG, {"loss", "top1"}),
     (SimSiam, SIMSIAM_CFG, {"loss", "cosine", "z_std"})],
    ids=["byol", "mocov3", "simsiam"],
)
def test_val_metrics_are_the_training_loss_and_detached_scalars(cls, config, names):
    torch.manual_seed(0)
    method = cls.create(conv_encoder(), 8, config).eval()
    views = _views(0)
    with torch.no_grad():
        metrics = method.val_metrics(views)
        train_loss = method.training_step(views)["loss"]
    assert set(metrics) == names
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    torch.testing.assert_close(metrics["loss"], train_loss)


def test_view_agreement_tells_collapse_from_spread_embeddings():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 64, generator=g)
    collapsed = torch.ones(512, 64) + 1e-4 * torch.randn(512, 64, generator=g)
    assert view_agreement(spread, spread)["z_std"].item() == pytest.approx(1.0, abs=0.05)
    assert view_agreement(collapsed, collapsed)["z_std"].item() < 0.01
    assert view_agreement(spread, -spread)["cosine"].item() == pytest.approx(-1.0)



def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6, affine=False))


def _global_bn_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """One of ``world`` gloo processes: its half of the batch through GlobalBatchNorm;
    saves its output, the DDP-averaged gradients and the running statistics."""
    import torch.distributed as dist

    from sslterm.models.norm import convert_global_batchnorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        net = convert_global_batchnorm(_bn_net()).train()
        x, w = _bn_batch()
        part = slice(rank * 4, (rank + 1) * 4)
        y = net(x[part])
        (y * w[part]).sum().div(4).backward()
        grads = [p.grad.clone() for p in net.parameters()]
        for g in grads:
            dist.all_reduce(g)
            g /= world
        torch.save({"y": y.detach(), "grads": grads, "state": net.state_dict()},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _bn_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 6, 6, generator=g), torch.randn(8, 6, generator=g)


@pytest.mark.slow  # two real processes: about 45 s on the loaded 2-core machine
def test_global_batchnorm_over_two_processes_equals_batchnorm_on_the_whole_batch(tmp_path):
    """model.sync_batchnorm on CPUs: two real gloo processes holding half a batch each give
    the outputs, gradients and running statistics of one process with the whole batch."""
    import socket

    import torch.multiprocessing as mp

    from sslterm.models.norm import GlobalBatchNorm, convert_global_batchnorm

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_global_bn_rank, args=(2, port, str(tmp_path)), nprocs=2)
    net = _bn_net().train()
    x, w = _bn_batch()
    y = net(x)
    (y * w).sum().div(8).backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(),
                               rtol=1e-4, atol=1e-5)
    for r in ranks:
        for a, b in zip(r["grads"], [p.grad for p in net.parameters()], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for key, value in net.state_dict().items():
            torch.testing.assert_close(r["state"][key], value, rtol=1e-4, atol=1e-6)
    frozen = _bn_net().requires_grad_(False)
    converted = convert_global_batchnorm(frozen)
    assert sum(isinstance(m, GlobalBatchNorm) for m in converted.modules()) == 2
    assert not any(p.requires_grad for p in converted.parameters())
    assert converted.state_dict().keys() == _bn_net().state_dict().keys()
