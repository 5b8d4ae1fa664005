import math

import pytest
import torch

from sslterm.train.optim import LARS, clip_gradients, lr_at, param_groups, scaled_lr


def test_lars_one_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad = torch.tensor([[0.6, 0.8]])  # ||g|| = 1
    b.grad = torch.tensor([0.5])
    wd, eta, lr = 0.1, 0.01, 2.0
    opt = LARS([{"params": [w], "weight_decay": wd},
                {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
               lr=lr, momentum=0.9, weight_decay=wd, trust_coefficient=eta)
    opt.step()
    # update = g + wd*w = [0.9, 1.2], ||update|| = 1.5; ratio = eta*5/1.5
    ratio = eta * 5 / 1.5
    expected = torch.tensor([[3.0 - lr * ratio * 0.9, 4.0 - lr * ratio * 1.2]])
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert math.isclose(b.item(), 1.0 - lr * 0.5, rel_tol=1e-6)  # plain SGD for biases
    # second step: momentum buffer = 0.9*old + new
    w.grad = torch.tensor([[0.6, 0.8]])
    b.grad = torch.tensor([0.5])
    opt.step()
    assert math.isclose(b.item(), 1.0 - lr * 0.5 - lr * (0.9 * 0.5 + 0.5), rel_tol=1e-6)


def test_param_groups_exclude_biases_norms_and_the_probe_module():
    probe = torch.nn.Linear(4, 2)
    model = torch.nn.ModuleDict({
        "conv": torch.nn.Conv2d(3, 4, 3), "bn": torch.nn.BatchNorm2d(4), "head": probe,
    })
    groups = {g["name"]: g for g in param_groups(model, 1e-4, probe)}
    assert [p.shape for p in groups["decay"]["params"]] == [torch.Size([4, 3, 3, 3])]
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["no_decay"]["lars_exclude"]
    assert len(groups["no_decay"]["params"]) == 3  # conv bias, bn weight, bn bias
    assert groups["probe"]["weight_decay"] == 0.0
    assert [p for p in groups["probe"]["params"]] == list(probe.parameters())
    # the probe is known by identity: a module merely named like it gets weight decay
    named = torch.nn.ModuleDict({"online_probe": torch.nn.Linear(4, 2)})
    assert [g["name"] for g in param_groups(named, 0.1)] == ["decay", "no_decay"]


@pytest.mark.parametrize(("scaling", "expected"), [("sqrt", 0.075 * 32), ("linear", 0.3 * 4),
                                                  ("none", 0.3)])
def test_scaled_lr(scaling, expected):
    base = 0.075 if scaling == "sqrt" else 0.3
    assert math.isclose(scaled_lr(base, 1024, scaling), expected)


def test_warmup_then_cosine():
    peak, total, warm = 2.0, 100, 10
    assert math.isclose(lr_at(0, total, warm, peak), 0.2)
    assert math.isclose(lr_at(9, total, warm, peak), 2.0)
    assert math.isclose(lr_at(10, total, warm, peak), 2.0)
    assert math.isclose(lr_at(55, total, warm, peak), 1.0)  # half way through the cosine
    assert lr_at(100, total, warm, peak) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(100, total, warm, peak, min_ratio=0.1) == pytest.approx(0.2)
    values = [lr_at(s, total, warm, peak) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))
    assert lr_at(0, total, 0, peak) == pytest.approx(peak)


def one_step(cls, w0: torch.Tensor, grad: torch.Tensor, wd: float) -> torch.Tensor:
    """The weights after one step of ``cls`` (lr 0.5, momentum 0.9, trust 0.01)."""
    w = torch.nn.Parameter(w0.clone())
    w.grad = grad.clone()
    cls([w], lr=0.5, momentum=0.9, weight_decay=wd, trust_coefficient=0.01).step()
    return w.detach()


W0 = torch.tensor([[3.0, 4.0], [1.0, -2.0]])


def test_lars_matches_lightly_when_the_gradient_points_along_the_weights():
    from lightly.utils.lars import LARS as LightlyLARS

    grad = 0.3 * W0  # ||g + wd*w|| == ||g|| + wd*||w||
    ours, theirs = one_step(LARS, W0, grad, 0.1), one_step(LightlyLARS, W0, grad, 0.1)
    assert torch.allclose(ours, theirs, atol=1e-7)
    assert not torch.allclose(ours, W0)


def test_lars_differs_from_lightly_as_its_docstring_says():
    from lightly.utils.lars import LARS as LightlyLARS

    grad, wd = torch.tensor([[0.6, -0.8], [0.5, 0.5]]), 0.1
    w_norm, g_norm = torch.linalg.vector_norm(W0), torch.linalg.vector_norm(grad)
    u = grad + wd * W0
    ours, theirs = one_step(LARS, W0, grad, wd), one_step(LightlyLARS, W0, grad, wd)
    # the same direction, lengths in the ratio of the two trust-ratio denominators
    scale = (g_norm + wd * w_norm) / torch.linalg.vector_norm(u)
    assert scale > 1
    assert torch.allclose(W0 - ours, (W0 - theirs) * scale, atol=1e-6)
    assert torch.allclose(ours, W0 - 0.5 * 0.01 * w_norm * u / torch.linalg.vector_norm(u))

    # weight decay 0: lightly takes a plain SGD step, this LARS still adapts
    plain, adapted = one_step(LightlyLARS, W0, grad, 0.0), one_step(LARS, W0, grad, 0.0)
    assert torch.allclose(plain, W0 - 0.5 * grad)
    assert torch.allclose(adapted, W0 - 0.5 * 0.01 * w_norm / g_norm * grad)


@pytest.mark.parametrize(("lr", "clipped"), [(0.05, True), (1.0, False)])
def test_lars_clip_lr_steps_at_most_plain_sgd(lr, clipped):
    """solo-learn's clip_lars_lr: the step is min(eta ||w|| / ||g||, lr) * g (one step, no
    momentum history, wd 0): plain SGD at the lr where the trust ratio exceeds it."""
    w0 = torch.tensor([[3.0, 4.0]])  # ||w|| = 5
    grad = torch.tensor([[0.6, 0.8]])  # ||g|| = 1, ratio = 0.02 * 5 / 1 = 0.1
    w = torch.nn.Parameter(w0.clone())
    opt = LARS([w], lr=lr, momentum=0.9, trust_coefficient=0.02, clip_lr=True)
    w.grad = grad.clone()
    opt.step()
    step = min(0.02 * 5 / 1, lr)
    assert clipped == (step == lr)
    assert torch.allclose(w.detach(), w0 - step * grad, atol=1e-6)
    unclipped = torch.nn.Parameter(w0.clone())
    plain = LARS([unclipped], lr=lr, momentum=0.9, trust_coefficient=0.02)
    unclipped.grad = grad.clone()
    plain.step()  # without the clip: lr * ratio * g, shorter than the clipped step at lr 0.05
    assert torch.allclose(unclipped.detach(), w0 - lr * 0.1 * grad, atol=1e-6)
    assert torch.equal(w.detach(), unclipped.detach()) == (not clipped)


def _grads(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((4, 3), (5,), (2, 2, 3))]
    for p, scale in zip(params, (10.0, 0.01, 3.0), strict=True):
        p.grad = torch.randn(p.shape, generator=g) * scale
    return params


def test_clip_gradients_global_is_torchs():
    ours, ref = _grads(0), _grads(0)
    clip_gradients(ours, 1.5, "global")
    torch.nn.utils.clip_grad_norm_(ref, 1.5)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours])) <= 1.5 + 1e-5


def test_clip_gradients_per_tensor_is_dinos():
    """The DINO paper's utils.clip_gradients, as a loop: each tensor by its own norm; a
    tensor below the threshold is left as it is (the control: global clipping is not)."""
    ours, ref = _grads(1), _grads(1)
    clip_gradients(ours, 1.5, "per_tensor")
    for p in ref:
        coef = 1.5 / (p.grad.norm(2) + 1e-6)
        if coef < 1:
            p.grad.mul_(coef)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.equal(ours[1].grad, _grads(1)[1].grad)  # small: untouched
    glob = _grads(1)
    clip_gradients(glob, 1.5, "global")
    assert not torch.allclose(glob[1].grad, ours[1].grad)


@pytest.mark.parametrize("clip_lr", [False, True])
def test_foreach_lars_equals_the_loop_step_for_step(clip_lr: bool) -> None:
    """Conv, linear, zero and 1-D tensors, an excluded group, a parameter without a gradient
    and a changing lr: both paths give the same parameters and momentum at every step."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 3, 3), (16, 8), (8,), (4, 4)]

    def make() -> list[torch.Tensor]:
        torch.manual_seed(0)
        params = [torch.randn(s, generator=torch.Generator().manual_seed(i)).requires_grad_()
                  for i, s in enumerate(shapes)]
        with torch.no_grad():
            params[3].zero_()  # ||w|| = 0: ratio 1
        params.append(torch.randn(5, requires_grad=True))  # no gradient: skipped
        return params

    def groups(ps: list[torch.Tensor]) -> list[dict]:
        return [{"params": ps[:2] + ps[3:], "weight_decay": 1e-4},
                {"params": ps[2:3], "weight_decay": 0.0, "lars_exclude": True}]

    loop_p, each_p = make(), make()
    loop = LARS(groups(loop_p), lr=0.5, trust_coefficient=0.02, clip_lr=clip_lr, foreach=False)
    each = LARS(groups(each_p), lr=0.5, trust_coefficient=0.02, clip_lr=clip_lr)
    for step in range(5):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for opt, params in ((loop, loop_p), (each, each_p)):
            for group in opt.param_groups:
                group["lr"] = 0.5 / (step + 1)
            for p, g in zip(params, grads, strict=False):
                p.grad = g.clone()
            opt.step()
        for a, b in zip(loop_p, each_p, strict=True):
            assert torch.equal(a, b), step
            if a in loop.state:
                assert torch.equal(loop.state[a]["momentum_buffer"], each.state[b]["momentum_buffer"])
