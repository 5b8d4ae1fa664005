"""DINO against lightly: the loss with its center update and teacher-temperature schedule,
the head (torch's weight-norm parametrization against lightly's deprecated weight_norm),
and the whole method over a few optimizer steps against a reference assembled from
lightly's modules with the paper's multi-crop forward; plus the last layer's freezing, the
views plan, the center in the state dict and the profile section's checks."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from methodhelpers import conv_encoder, seeded_views
from torch import nn

from sslterm.errors import ProfileError
from sslterm.methods.dino import DINO, by_resolution, teacher_temperature
from sslterm.methods.losses import dino_center, dino_loss, dino_teacher_entropy
from sslterm.models.heads import DINOHead
from sslterm.profile.load import load_profile
from sslterm.profile.schema import DINOConfig
from sslterm.train.optim import build_optimizer, param_groups

lightly_heads = pytest.importorskip("lightly.models.modules.heads")
from lightly.loss import DINOLoss  # noqa: E402
from lightly.models.utils import deactivate_requires_grad, update_momentum  # noqa: E402
from lightly.utils.scheduler import cosine_schedule  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")

CFG = DINOConfig(projector_hidden_dim=24, bottleneck_dim=12, output_dim=40,
                 freeze_last_layer_epochs=1, student_temp=0.1, teacher_temp=0.07,
                 warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=2, center_momentum=0.8,
                 momentum_start=0.9, momentum_end=1.0, local_crops=3, local_size=6)
STEPS_PER_EPOCH, STEPS = 2, 3  # steps 0, 1 in epoch 0 (warm-up, frozen last layer), 2 in epoch 1


def _views(step: int, local_crops: int = CFG.local_crops) -> list[torch.Tensor]:
    return seeded_views(100 + step, (10, 10) + (6,) * local_crops)


def _outputs(seed: int, views: int, dim: int = 40, batch: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [3 * torch.randn(batch, dim, generator=g) for _ in range(views)]


# -- loss, center, temperature ------------------------------------------------------------
@pytest.mark.parametrize("warmup_epochs", [0, 1, 4])
def test_teacher_temperature_follows_lightlys_schedule(warmup_epochs):
    theirs = DINOLoss(40, warmup_teacher_temp=0.04, teacher_temp=0.07,
                      warmup_teacher_temp_epochs=warmup_epochs)
    for epoch in range(6):
        expected = (theirs.teacher_temp_schedule[epoch].item() if epoch < warmup_epochs
                    else theirs.teacher_temp)
        assert teacher_temperature(epoch, 0.04, 0.07, warmup_epochs) == pytest.approx(expected)
    if warmup_epochs > 1:  # a warm-up, not a constant: the test could fail
        assert teacher_temperature(0, 0.04, 0.07, warmup_epochs) == 0.04


@pytest.mark.parametrize("student_views", [2, 5], ids=["global-only", "multi-crop"])
def test_loss_and_center_match_lightly_over_consecutive_calls(student_views):
    theirs = DINOLoss(40, warmup_teacher_temp=0.04, teacher_temp=0.07,
                      warmup_teacher_temp_epochs=2, student_temp=0.1, center_momentum=0.8)
    center = torch.zeros(40)
    for call in range(3):  # epochs 0, 1 (warm-up) and 2 (after): temperature and center move
        teacher = _outputs(call, 2)
        student = [s.requires_grad_() for s in _outputs(10 + call, student_views)]
        theirs_student = [s.detach().clone().requires_grad_() for s in student]
        temp = teacher_temperature(call, 0.04, 0.07, 2)
        ours = dino_loss(teacher, student, center, temp, 0.1)
        ref = theirs(teacher, theirs_student, epoch=call)
        torch.testing.assert_close(ours, ref)
        ours.backward()
        ref.backward()
        for a, b in zip(student, theirs_student, strict=True):
            torch.testing.assert_close(a.grad, b.grad)
        center = dino_center(center, teacher, 0.8)
        torch.testing.assert_close(center, theirs.center.flatten())
    assert center.abs().sum() > 0  # the center moved: the comparison is not vacuous


def test_loss_is_float32_under_bf16_autocast_and_needs_two_views():
    teacher, student = _outputs(0, 2), _outputs(1, 4)
    exact = dino_loss(teacher, student, torch.zeros(40), 0.04, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dino_loss([t.bfloat16() for t in teacher], [s.bfloat16() for s in student],
                         torch.zeros(40), 0.04, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, exact, rtol=2e-2, atol=1e-2)  # only the inputs' rounding
    with pytest.raises(ValueError, match="at least two views"):
        dino_loss(teacher[:1], student[:1], torch.zeros(40), 0.04, 0.1)


def test_teacher_entropy_tells_uniform_and_one_hot_collapse_from_a_spread_teacher():
    flat = [torch.zeros(6, 40)] * 2
    one_hot = [torch.zeros(6, 40).index_fill_(1, torch.tensor([3]), 10.0)] * 2
    spread = _outputs(0, 2)
    assert dino_teacher_entropy(flat, torch.zeros(40), 0.04).item() == pytest.approx(1.0)
    assert dino_teacher_entropy(one_hot, torch.zeros(40), 0.04).item() < 0.01
    assert 0.05 < dino_teacher_entropy(spread, torch.zeros(40), 0.5).item() < 0.95


# -- head ---------------------------------------------------------------------------------
def _lightly_head(ours: DINOHead, norm_last_layer: bool, batch_norm: bool = False) -> nn.Module:
    """lightly's head with our weights: mlp.* -> layers.*, weight-norm g/v in the same order."""
    theirs = lightly_heads.DINOProjectionHead(8, 24, 12, 40, batch_norm=batch_norm,
                                              norm_last_layer=norm_last_layer)
    keys = list(theirs.state_dict())
    assert keys[-2:] == ["last_layer.weight_g", "last_layer.weight_v"]
    theirs.load_state_dict(dict(zip(keys, ours.state_dict().values(), strict=True)))
    return theirs


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_head_equals_lightlys_on_copied_weights(norm_last_layer, batch_norm):
    torch.manual_seed(0)
    ours = DINOHead(8, 24, 12, 40, batch_norm=batch_norm, norm_last_layer=norm_last_layer)
    theirs = _lightly_head(ours, norm_last_layer, batch_norm)
    assert [p.requires_grad for p in ours.parameters()] == [
        p.requires_grad for p in theirs.parameters()]
    gain = ours.last_layer.parametrizations.weight.original0
    assert torch.equal(gain, torch.ones_like(gain))
    x = torch.randn(5, 8)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs)
    w = torch.randn(5, 40)
    (y_ours * w).sum().backward()
    (y_theirs * w).sum().backward()
    pairs = [(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
             if a.requires_grad]
    for a, b in pairs:
        torch.testing.assert_close(a.grad, b.grad)
    # 3 Linear weights, their biases (only the last one's with BatchNorm, then 2 BatchNorm
    # weight+bias pairs), v, and g unless fixed
    assert len(pairs) == (10 if batch_norm else 8) - norm_last_layer
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)  # BatchNorm's running statistics moved alike
    if norm_last_layer:  # unit prototypes: outputs are cosines
        assert y_ours.abs().max() <= 1 + 1e-6


def test_head_init_is_the_papers():
    torch.manual_seed(0)
    head = DINOHead(64, 256, 128, 40)
    first = head.mlp[0]
    assert first.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert first.weight.abs().max() <= 2 and torch.equal(first.bias, torch.zeros_like(first.bias))
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]


# -- the whole method against lightly -----------------------------------------------------
def multicrop_forward(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]):
    """facebookresearch/dino's ``MultiCropWrapper.forward``: one backbone pass per run of
    consecutive same-size views, one head pass on all of them."""
    sizes = torch.tensor([v.shape[-1] for v in views])
    ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
    start, out = 0, []
    for end in ends.tolist():
        out.append(backbone(torch.cat(views[start:end])))
        start = end
    return head(torch.cat(out)).chunk(len(views))


class LightlyDINO(nn.Module):
    """lightly's DINO example (examples/pytorch/dino.py) around a copy of our weights, its
    forward the paper's multi-crop one (lightly's example runs each view alone)."""

    def __init__(self, ours: DINO, c: DINOConfig) -> None:
        super().__init__()
        self.student_backbone = copy.deepcopy(ours.encoder)
        self.student_head = _lightly_head(ours.head, c.norm_last_layer, c.head_batch_norm)
        self.student_head.freeze_last_layer = c.freeze_last_layer_epochs
        self.teacher_backbone = copy.deepcopy(self.student_backbone)
        # a second copy, not a deepcopy: the deprecated weight_norm holds a computed weight
        self.teacher_head = _lightly_head(ours.head, c.norm_last_layer, c.head_batch_norm)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(c.output_dim, warmup_teacher_temp=c.warmup_teacher_temp,
                                  teacher_temp=c.teacher_temp,
                                  warmup_teacher_temp_epochs=c.warmup_teacher_temp_epochs,
                                  student_temp=c.student_temp, center_momentum=c.center_momentum)

    def loss(self, views, epoch):
        with torch.no_grad():
            teacher = multicrop_forward(self.teacher_backbone, self.teacher_head, views[:2])
        student = multicrop_forward(self.student_backbone, self.student_head, views)
        return self.criterion(list(teacher), list(student), epoch=epoch)

    def momentum_step(self, step, total, c):
        m = cosine_schedule(step, total, c.momentum_start, c.momentum_end)
        update_momentum(self.student_backbone, self.teacher_backbone, m=m)
        update_momentum(self.student_head, self.teacher_head, m=m)
        return m


@pytest.mark.parametrize("head_batch_norm", [False, True])
def test_dino_trains_like_the_lightly_reference(head_batch_norm):
    torch.manual_seed(0)
    cfg = CFG.model_copy(update={"head_batch_norm": head_batch_norm})
    ours = DINO.create(conv_encoder(), 8, cfg).train()
    assert any(isinstance(m, nn.BatchNorm1d) for m in ours.head.modules()) == head_batch_norm
    theirs = LightlyDINO(ours, cfg).train()
    student = [theirs.student_backbone, theirs.student_head]
    mine = [p for p in ours.parameters() if p.requires_grad]
    reference = [p for m in student for p in m.parameters() if p.requires_grad]
    assert len(mine) == len(reference)
    opt_a, opt_b = torch.optim.SGD(mine, lr=0.5), torch.optim.SGD(reference, lr=0.5)
    losses = []
    for step in range(STEPS):
        epoch = step // STEPS_PER_EPOCH
        views = _views(step)
        ours.set_progress(step, STEPS_PER_EPOCH, STEPS)
        out = ours(views)
        ref_loss = theirs.loss(views, epoch)
        torch.testing.assert_close(out["loss"], ref_loss)
        torch.testing.assert_close(out["features"], theirs.student_backbone(
            torch.cat(views[:2]))[:8])
        assert out["teacher_temp"].item() == pytest.approx(
            teacher_temperature(epoch, 0.04, 0.07, 2))
        opt_a.zero_grad()
        opt_b.zero_grad()
        out["loss"].backward()
        ref_loss.backward()
        theirs.student_head.cancel_last_layer_gradients(epoch)  # lightly: grads to None
        for a, b in zip(mine, reference, strict=True):
            torch.testing.assert_close(a.grad, torch.zeros_like(a) if b.grad is None else b.grad)
        opt_a.step()
        opt_b.step()
        assert ours.after_step(step, STEPS) == {
            "momentum": pytest.approx(theirs.momentum_step(step, STEPS, cfg))}
        torch.testing.assert_close(ours.center, theirs.criterion.center.flatten())
        for a, b in zip([*ours.teacher.encoder.state_dict().values(),
                         *ours.teacher.projector.state_dict().values()],
                        [*theirs.teacher_backbone.state_dict().values(),
                         *theirs.teacher_head.state_dict().values()], strict=True):
            torch.testing.assert_close(a, b)
        losses.append(out["loss"].item())
    assert losses[0] != losses[-1]
    assert not torch.equal(ours.center, torch.zeros_like(ours.center))
    assert not all(torch.equal(a, b) for a, b in zip(ours.teacher.encoder.parameters(),
                                                     ours.encoder.parameters(), strict=True))


def test_views_of_one_size_go_through_the_encoder_together():
    views = _views(0)
    assert by_resolution(views) == [[0, 1], [2, 3, 4]]
    assert by_resolution([views[2], views[0], views[1], views[3]]) == [[0], [1, 2], [3]]
    torch.manual_seed(0)
    method = DINO.create(conv_encoder(), 8, CFG).train()
    seen = []
    method.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    method.training_step(views)
    assert seen == [16, 24]  # student: 2 global, 3 local views of 8 (the teacher is a copy)


@pytest.mark.parametrize("optimizer", ["lars", "sgd", "adamw"])
def test_the_last_layer_stays_put_while_frozen_and_learns_after(optimizer):
    """lightly and the paper set the last layer's grads to None in the first epochs; here
    they are zero (DDP needs every parameter used), so weight decay and momentum still act
    on ``v``: only along ``v`` itself, which leaves the normalised prototypes unchanged."""
    torch.manual_seed(0)
    method = DINO.create(conv_encoder(), 8, CFG).train()
    opt = build_optimizer(optimizer, param_groups(method, 1e-2), 0.5, momentum=0.9,
                          weight_decay=1e-2, trust_coefficient=1e-3, betas=(0.9, 0.999))
    last = method.head.last_layer

    def step(n):
        method.set_progress(n, STEPS_PER_EPOCH, 10)
        opt.zero_grad()
        method.training_step(_views(n))["loss"].backward()
        v = last.parametrizations.weight.original1
        opt.step()
        return v.grad

    weight, first = last.weight.detach().clone(), method.head.mlp[0].weight.detach().clone()
    for n in range(STEPS_PER_EPOCH):  # epoch 0
        assert torch.equal(step(n), torch.zeros_like(last.parametrizations.weight.original1))
    torch.testing.assert_close(last.weight, weight, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(method.head.mlp[0].weight, first)  # the rest learns meanwhile
    assert step(STEPS_PER_EPOCH).abs().sum() > 0  # epoch 1
    assert not torch.allclose(last.weight, weight, rtol=1e-4, atol=1e-5)


# -- the method's contract ----------------------------------------------------------------
def test_views_plan_is_two_global_views_and_the_local_ones():
    method = DINO.create(conv_encoder(), 8, CFG)
    views = method.views()
    assert [(v.size, v.scale) for v in views] == (
        [(None, (0.4, 1.0))] * 2 + [(6, (0.05, 0.4))] * 3)
    none = DINO.create(conv_encoder(), 8, CFG.model_copy(update={"local_crops": 0}))
    assert len(none.views()) == 2
    out = none.training_step(_views(0, local_crops=0))  # two global views alone still train
    assert out["loss"].requires_grad


def test_center_and_teacher_are_checkpointed_and_val_metrics_leave_the_center():
    torch.manual_seed(0)
    method = DINO.create(conv_encoder(), 8, CFG).train()
    assert method.eval_encoder() is method.encoder
    assert not any(p.requires_grad for p in method.teacher.parameters())
    method.training_step(_views(0))
    method.after_step(0, 10)
    center = method.center.clone()
    assert "center" in method.state_dict() and center.abs().sum() > 0
    method.eval()
    with torch.no_grad():
        metrics = method.val_metrics(_views(1))
        train_loss = method.training_step(_views(1))["loss"]
    assert set(metrics) == {"loss", "teacher_entropy", "kl"}
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    torch.testing.assert_close(metrics["loss"], train_loss)  # same loss, before the update
    method.center.copy_(center)
    restored = DINO.create(conv_encoder(), 8, CFG)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.center, center)
    for a, b in zip(restored.teacher.state_dict().values(), method.teacher.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("override", "message"), [
    ("dino.local_scale=[0.5, 0.2]", "dino.local_scale: must be 0 < low <= high <= 1 (got [0.5, 0.2])"),
    ("dino.global_scale=[0.4, 1.5]", "dino.global_scale: must be 0 < low <= high <= 1 (got [0.4, 1.5])"),
    ("dino.output_dim=1", "dino.output_dim: must be >= 2 (got 1)"),
    ("dino.local_size=96", "dino.local_size: must be <= the training image size, 32 px (got 96); "
                           "about half of it, e.g. 16 for 32 px images"),
    ("data.image_size=8", "data.image_size: must be >= dino.local_size = 16 (got 8); "
                          "lower dino.local_size too"),
])
def test_bad_dino_settings_are_one_line_errors(override, message):
    with pytest.raises(ProfileError) as info:
        load_profile("profiles/smoke.toml", ["model.method=dino", override])
    assert str(info.value) == f"<command line>: {message}"


@pytest.mark.parametrize("overrides", [
    ["model.method=simclr", "dino.local_size=96"],  # another method's section is not checked
    ["model.method=dino", "dino.local_size=96", "dino.local_crops=0"],  # no local views
    ["model.method=dino", "dino.local_size=96", "data.dataset=imagenet", "data.image_size=0"],
    ["model.method=dino", "dino.local_size=32"],  # as large as the image: allowed
])
def test_local_size_is_only_checked_where_it_makes_local_views_of_a_known_size(overrides):
    assert load_profile("profiles/smoke.toml", overrides).dino.local_size in (32, 96)


def test_a_vit_student_takes_local_views_of_another_size():
    """DINO's own backbone is a ViT: its position embeddings follow each view's size, and a
    32 px view gives what the encoder gave before multi-crop existed."""
    from sslterm.models import create_encoder

    encoder, dim, _ = create_encoder("test_vit", image_size=32)
    plain = timm.create_model("test_vit", num_classes=0, img_size=32)
    plain.load_state_dict(encoder.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(encoder(x), plain(x))
    method = DINO.create(encoder, dim, CFG.model_copy(update={"local_crops": 2, "local_size": 16}))
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32),
             torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = method.training_step(views)
    out["loss"].backward()
    assert out["features"].shape == (4, dim) and torch.isfinite(out["loss"])
    assert encoder.pos_embed.grad is not None


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_head_layers_is_the_papers_nlayers(layers):
    """dino.head_layers: Linear layers in the MLP, as the paper's (and solo-learn's) nlayers:
    1 = in -> bottleneck, 2 = in -> hidden -> bottleneck, 3 = two hidden layers."""
    head = DINOHead(8, 24, 12, 40, layers=layers)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == {1: [(8, 12)], 2: [(8, 24), (24, 12)], 3: [(8, 24), (24, 24), (24, 12)]}[layers]
    assert head(torch.randn(5, 8)).shape == (5, 40)


def test_kl_is_the_mean_kl_of_teacher_to_student_over_the_pairs():
    """The logged KL(teacher || student), checked against a direct sum over DINO's pairs:
    sum t (log t - log s) for each teacher view and every other student view."""
    torch.manual_seed(0)
    method = DINO.create(conv_encoder(), 8, CFG).train()
    out = method.training_step(_views(0))
    views = _views(0)
    student = [x.detach() for x in method._student(views)[0]]
    teacher = method._teacher(views)
    center = torch.zeros(CFG.output_dim)  # the center before the step's update
    t = [torch.softmax((x - center) / method.teacher_temp(), -1) for x in teacher]
    s = [torch.log_softmax(x / CFG.student_temp, -1) for x in student]
    pairs = [(t[i] * (t[i].log() - s[j])).sum(-1).mean()
             for i in range(len(t)) for j in range(len(s)) if j != i]
    torch.testing.assert_close(out["kl"], torch.stack(pairs).mean(), atol=1e-4, rtol=1e-4)
    assert out["kl"] >= 0
