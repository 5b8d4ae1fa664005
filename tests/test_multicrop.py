"""Multi-crop: a method's views of different sizes and crop scales, batched and per sample.

The crop boxes are read back from the augmented views themselves: the test images are
coordinate ramps (red = column, green = row), so with colour, flip and blur off each view
is a linear ramp whose offset and slope give its box exactly. Each group's boxes are then
compared with torchvision's ``RandomResizedCrop`` law at that group's scale (two-sample KS,
as tests/test_augment.py compares the batched crop sampler), with a wrong scale as the
negative control.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from test_augment import MEAN, RAW, STD, gen, images, ks_pvalues, to_pil, torchvision_boxes

from sslterm.data.augment import BatchAugment, sample_views
from sslterm.data.transforms import multi_view
from sslterm.data.views import View, describe_views, resolve_views
from sslterm.methods.base import TWO_GLOBAL_VIEWS
from sslterm.profile.schema import AugmentConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
GLOBAL, LOCAL = View(), View(size=16, scale=(0.05, 0.4))
# DINO's order: the global views first, locals after; a third size among them
PLAN = (GLOBAL, GLOBAL, LOCAL, View(size=24, scale=(0.3, 0.6)), LOCAL, LOCAL)
RATIO = (3 / 4, 4 / 3)
ONLY_CROP = AugmentConfig(flip_p=0.0, color_p=0.0, grayscale_p=0.0)  # crop on, nothing else
GLOBAL_SCALE = ONLY_CROP.crop_scale
STEP = 8  # ramp value per pixel: 0..248 over 32 pixels


# --- resolving a plan --------------------------------------------------------------------


def test_views_resolve_against_the_run_in_their_order() -> None:
    resolved = resolve_views(PLAN, SIZE, (0.08, 1.0))
    assert resolved[:3] == (View(32, (0.08, 1.0)), View(32, (0.08, 1.0)), View(16, (0.05, 0.4)))
    assert resolved[3] == View(24, (0.3, 0.6))
    assert resolve_views(resolved, 64, (0.5, 1.0)) == resolved  # nothing left to fill in
    assert describe_views(resolved) == (
        "2 x 32 px (scale 0.08-1) + 3 x 16 px (scale 0.05-0.4) + 1 x 24 px (scale 0.3-0.6)"
    )


@pytest.mark.parametrize(
    "bad",
    [(), (View(size=0),), (View(scale=(0.0, 0.5)),), (View(scale=(0.6, 0.5)),),
     (View(), View(scale=(0.5, 1.2)))],
)
def test_impossible_views_are_refused(bad: tuple[View, ...]) -> None:
    with pytest.raises(ValueError, match="view"):
        resolve_views(bad, SIZE, (0.08, 1.0))


# --- the batched views -------------------------------------------------------------------


def test_mixed_views_come_in_the_declared_order_and_sizes() -> None:
    x = images(6, size=40)
    out = BatchAugment(AugmentConfig(blur=True), SIZE, MEAN, STD, PLAN)(x, gen())
    assert [tuple(v.shape) for v in out] == [(6, 3, s, s) for s in (32, 32, 16, 24, 16, 16)]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out)
    assert not torch.allclose(out[2], out[4]) and not torch.allclose(out[0], out[1])


def test_each_view_gets_its_own_scale() -> None:
    """Scale 1 at ratio 1 is the whole image; a tiny scale is a 16-pixel window of it."""
    cfg = AugmentConfig(flip_p=0.0, color_p=0.0, grayscale_p=0.0, crop_ratio=(1.0, 1.0))
    plan = (View(scale=(1.0, 1.0)), View(size=16, scale=(0.25, 0.25)), View(scale=(1.0, 1.0)))
    x = images(8)
    whole, window, again = BatchAugment(cfg, SIZE, *RAW, plan)(x, gen())
    torch.testing.assert_close(whole, x.float() / 255)
    torch.testing.assert_close(again, whole)
    # every 16x16 window of each image: the view is exactly one of them
    windows = (x.float() / 255).unfold(2, 16, 1).unfold(3, 16, 1)  # [B, 3, 17, 17, 16, 16]
    distance = (windows - window[:, :, None, None]).abs().amax(dim=(1, 4, 5))
    assert (distance.flatten(1).amin(dim=1) < 1e-5).all()


def test_two_global_views_are_drawn_as_before() -> None:
    """The default plan is one group of two: the same draws and views as one sample_views
    call for two views, scattered to their slots; local views added after the globals
    leave the globals unchanged for the same generator."""
    cfg = AugmentConfig(blur=True, rotation_p=0.3)
    aug = BatchAugment(cfg, SIZE, MEAN, STD, TWO_GLOBAL_VIEWS)
    x = images(20)
    out = aug(x, gen(5))
    params = sample_views(cfg, 20, SIZE, SIZE, gen(5), views=2)
    direct = torch.empty(40, 3, SIZE, SIZE)
    direct[params.source] = aug._views(x, params, cfg, SIZE)
    for got, want in zip(out, direct.split(20), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    default = BatchAugment(cfg, SIZE, MEAN, STD)(x, gen(5))  # views=2
    assert all(torch.equal(a, b) for a, b in zip(out, default, strict=True))
    with_locals = BatchAugment(cfg, SIZE, MEAN, STD, (GLOBAL, GLOBAL, LOCAL, LOCAL))(x, gen(5))
    assert torch.equal(with_locals[0], out[0]) and torch.equal(with_locals[1], out[1])


def ramps(n: int) -> torch.Tensor:
    """uint8 [n, 3, 32, 32]: red = STEP * column, green = STEP * row, blue = 0."""
    coord = torch.arange(SIZE) * STEP
    ramp = torch.stack((coord.expand(SIZE, SIZE), coord.view(-1, 1).expand(SIZE, SIZE),
                        torch.zeros(SIZE, SIZE, dtype=torch.long)))
    return ramp.to(torch.uint8).expand(n, 3, SIZE, SIZE).contiguous()


def read_boxes(views: torch.Tensor) -> torch.Tensor:
    """Crop boxes (top, left, h, w) [B, 4] of views of ``ramps`` in [0, 1]: along each axis
    output pixel j samples source coordinate start + (j + 0.5) * length / size, and a ramp
    reads that back (interior pixels, whose filter taps all lie inside the crop)."""
    size = views.shape[-1]
    along = (views[:, 1, :, size // 2], views[:, 0, size // 2, :])  # rows, columns
    box = []
    for line in along:
        coord = line.double() * 255 / STEP + 0.5  # pixel centre coordinates
        slope = (coord[:, -2] - coord[:, 1]) / (size - 3)
        box.append((coord[:, 1] - 1.5 * slope, slope * size))
    (top, h), (left, w) = box
    return torch.stack((top, left, h, w), dim=1).round().long()


@pytest.fixture(scope="module")
def batched_boxes() -> dict[View, torch.Tensor]:
    """Crop boxes read back from 2000 images' views of PLAN, pooled per resolved view."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture, which is per test
    try:
        out = BatchAugment(ONLY_CROP, SIZE, *RAW, PLAN)(ramps(2000), gen(3))
    finally:
        torch.set_num_threads(threads)
    boxes: dict[View, list[torch.Tensor]] = {}
    for view, views in zip(resolve_views(PLAN, SIZE, ONLY_CROP.crop_scale), out, strict=True):
        boxes.setdefault(view, []).append(read_boxes(views))
    return {view: torch.cat(b) for view, b in boxes.items()}


def test_ramps_give_back_the_sampled_boxes() -> None:
    """The read-back is exact: the boxes the sampler drew for a group, in their slots."""
    cfg = ONLY_CROP.model_copy(update={"crop_scale": LOCAL.scale})
    a, b = BatchAugment(ONLY_CROP, SIZE, *RAW, (LOCAL, LOCAL))(ramps(50), gen(1))
    params = sample_views(cfg, 50, SIZE, SIZE, gen(1), views=2)
    drawn = torch.empty(100, 4, dtype=torch.long)
    drawn[params.source] = params.boxes
    assert torch.equal(torch.cat((read_boxes(a), read_boxes(b))), drawn)


def test_each_groups_crops_follow_torchvisions_law_at_its_scale(batched_boxes) -> None:
    assert len(batched_boxes) == 3
    for view, boxes in batched_boxes.items():
        ref = torchvision_boxes(3000, SIZE, SIZE, view.scale, RATIO)
        for name, p in ks_pvalues(boxes, ref, SIZE, SIZE).items():
            assert p > 1e-3, f"{view} {name}: KS p={p:.2g}"


@pytest.mark.parametrize("wrong", [GLOBAL_SCALE, (0.1, 0.4), (0.05, 0.3)])
def test_a_wrong_scale_is_detected(batched_boxes, wrong: tuple[float, float]) -> None:
    """The same statistic rejects the local views' crops as drawn at the global scale, or
    at a slightly different local one."""
    ref = torchvision_boxes(3000, SIZE, SIZE, wrong, RATIO)
    assert ks_pvalues(batched_boxes[View(16, LOCAL.scale)], ref, SIZE, SIZE)["area"] < 1e-6


# --- the per-sample views ----------------------------------------------------------------


def test_per_sample_views_have_the_declared_sizes_and_scales() -> None:
    views = pickle.loads(pickle.dumps(multi_view(AugmentConfig(blur=True), SIZE, MEAN, STD, PLAN)))
    torch.manual_seed(0)
    drawn = views(to_pil(images(1)[0]))
    assert [tuple(v.shape) for v in drawn] == [(3, s, s) for s in (32, 32, 16, 24, 16, 16)]
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[2], drawn[4])
    assert [(p.size, p.cfg.crop_scale) for p in views.pipelines] == [
        (v.size, v.scale) for v in resolve_views(PLAN, SIZE, (0.08, 1.0))
    ]


def test_per_sample_crops_follow_the_same_law() -> None:
    """torchvision's own crops, read back the same way: the local views' area distribution
    is the one the batched path is tested against, and not the global one."""
    views = multi_view(ONLY_CROP, SIZE, *RAW, (GLOBAL, LOCAL))
    torch.manual_seed(0)
    image = to_pil(ramps(1)[0])
    drawn = [views(image) for _ in range(600)]
    for k, view in enumerate(resolve_views((GLOBAL, LOCAL), SIZE, ONLY_CROP.crop_scale)):
        boxes = read_boxes(torch.stack([d[k] for d in drawn]))
        ref = torchvision_boxes(3000, SIZE, SIZE, view.scale, RATIO)
        assert ks_pvalues(boxes, ref, SIZE, SIZE)["area"] > 1e-3
    wrong = torchvision_boxes(3000, SIZE, SIZE, GLOBAL_SCALE, RATIO)
    local = read_boxes(torch.stack([d[1] for d in drawn]))
    assert ks_pvalues(local, wrong, SIZE, SIZE)["area"] < 1e-6


# --- CUDA: the same code gives the same views --------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_a_mixed_plan() -> None:
    aug = BatchAugment(AugmentConfig(blur=True, rotation_p=0.3), SIZE, MEAN, STD, PLAN)
    x = images(64)
    cpu = aug(x, gen(5))
    cuda = aug.cuda()(x.cuda(), gen(5))
    for c, g in zip(cpu, cuda, strict=True):
        assert g.is_cuda and g.shape == c.shape
        torch.testing.assert_close(g.cpu(), c, atol=1e-3, rtol=0)
    on_device = aug(x.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert [v.shape[-1] for v in on_device] == [32, 32, 16, 24, 16, 16]
