"""Batched augmentation (sslterm.data.augment) against the torchvision per-sample path.

Exactness checks compare each batched operation with torchvision's functional op on
the same parameters; distribution checks compare sampled parameters (two-sample KS)
and statistics of many augmented views of the same images with the reference
pipeline (transforms.simclr_view). Negative controls show the checks can fail.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image, ImageOps
from scipy import stats
from torchvision import transforms as tv1
from torchvision.transforms.v2 import functional as TF

from sslterm.data import augment
from sslterm.data.augment import (
    HUE,
    BatchAugment,
    adjust_hue,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    jitter_ranges,
    normalize,
    resized_crop,
    rotate,
    sample_crop_boxes,
    sample_jitter,
)
from sslterm.data.transforms import eval_transform, multi_view, simclr_view
from sslterm.data.views import View
from sslterm.profile.schema import AugmentConfig, strength_jitter

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean/std that leave views in [0, 1]
PLAIN = {"crop": False, "flip_p": 0.0, "color_p": 0.0, "grayscale_p": 0.0}


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Colourful uint8 test images with smooth regions and edges, [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand((n, 3, 4, 4), generator=g), size, mode="bilinear"
    )
    blocks = torch.nn.functional.interpolate(torch.rand((n, 3, 8, 8), generator=g), size)
    return ((0.5 * smooth + 0.5 * blocks) * 255).round().to(torch.uint8)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


# --- output contract -------------------------------------------------------------------


def test_shapes_dtype_and_value_range() -> None:
    aug = BatchAugment(AugmentConfig(blur=True, rotation_p=0.5), 24, MEAN, STD)
    a, b = aug(images(6, size=40), gen())
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    for view in (a, b):
        assert view.shape == (6, 3, 24, 24) and view.dtype == torch.float32
        assert torch.isfinite(view).all()
        assert (view >= lo.view(1, 3, 1, 1) - 1e-5).all() and (
            view <= hi.view(1, 3, 1, 1) + 1e-5
        ).all()
    assert not torch.allclose(a, b)


def test_as_many_views_as_asked_each_its_own_draw() -> None:
    """A method's views() decides the count: three views of the same images, all different."""
    x = images(5)
    three = BatchAugment(AugmentConfig(), 32, MEAN, STD, views=3)(x, gen(4))
    assert len(three) == 3 and all(v.shape == (5, 3, 32, 32) for v in three)
    assert not torch.allclose(three[1], three[2]) and not torch.allclose(three[0], three[2])
    assert len(BatchAugment(AugmentConfig(), 32, MEAN, STD, views=1)(x, gen(4))) == 1


def test_rejects_non_uint8_input() -> None:
    aug = BatchAugment(AugmentConfig(), 32, MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        aug(images(2).float())


def test_seeded_generator_is_deterministic() -> None:
    aug = BatchAugment(AugmentConfig(blur=True), 32, MEAN, STD)
    x = images(8)
    a, b, c = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])


def test_cpu_chunking_does_not_change_the_views(monkeypatch: pytest.MonkeyPatch) -> None:
    aug = BatchAugment(AugmentConfig(), 32, MEAN, STD)
    x = images(30)
    monkeypatch.setattr(augment, "CPU_CHUNK", 4)
    small = aug(x, gen(3))
    monkeypatch.setattr(augment, "CPU_CHUNK", 1024)
    whole = aug(x, gen(3))
    for s, w in zip(small, whole, strict=True):
        torch.testing.assert_close(s, w, atol=1e-5, rtol=0)


def test_normalize() -> None:
    x = images(3)
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(normalize(x, MEAN, STD), expected)


# --- each operation equals torchvision's on the same parameters -------------------------


@pytest.mark.parametrize(("in_size", "out_size"), [((32, 32), 32), ((48, 40), 24)])
def test_resized_crop_matches_torchvision(in_size: tuple[int, int], out_size: int) -> None:
    x = torch.rand((16, 3, *in_size), generator=gen())
    boxes = sample_crop_boxes(16, *in_size, (0.08, 1.0), (3 / 4, 4 / 3), gen(1))
    flip = torch.arange(16) % 2 == 0
    ours = resized_crop(x, boxes, flip, out_size)
    for i in range(16):
        ref = TF.resized_crop(x[i], *boxes[i].tolist(), [out_size, out_size], antialias=True)
        torch.testing.assert_close(ours[i], ref.flip(-1) if flip[i] else ref, atol=1e-5, rtol=0)


def test_hue_matches_torchvision() -> None:
    x = torch.rand((32, 3, 8, 8), generator=gen())
    x[:, :, :2] = x[:, :1, :2]  # gray pixels
    x[:, 1, 2:4] = x[:, 0, 2:4]  # ties between the max channels
    shift = torch.linspace(-0.5, 0.5, 32)
    ref = torch.stack([TF.adjust_hue(x[i], float(shift[i])) for i in range(32)])
    torch.testing.assert_close(adjust_hue(x, shift), ref, atol=1e-5, rtol=0)


def test_jitter_matches_torchvision_ops_in_the_sampled_order() -> None:
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    params = sample_jitter(12, strength_jitter(1.0), 1.0, gen(4))
    x = torch.rand((12, 3, 16, 16), generator=gen())
    ours = color_jitter(x.clone(), params)
    for i in range(12):
        ref = x[i]
        for op in params.order[i].tolist():
            ref = ops[op](ref, float(params.factors[i, op]))
        torch.testing.assert_close(ours[i], ref, atol=2e-4, rtol=0)


def test_rotation_matches_torchvision() -> None:
    x = torch.rand((3, 3, 32, 32), generator=gen())
    angles = torch.tensor([0.0, 12.5, -30.0])
    ours = rotate(x, angles)
    for i in range(3):
        ref = TF.rotate(x[i], float(angles[i]), interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_blur_matches_torchvision() -> None:
    x = torch.rand((3, 3, 32, 32), generator=gen())
    sigma = torch.tensor([0.0, 0.5, 1.7])
    ours = gaussian_blur(x, sigma, 5)
    torch.testing.assert_close(ours[0], x[0])
    for i in (1, 2):
        ref = TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


# --- sampled parameters follow torchvision's distributions ------------------------------


def torchvision_boxes(n: int, height: int, width: int, scale, ratio) -> torch.Tensor:
    torch.manual_seed(0)
    img = torch.empty(3, height, width)
    return torch.tensor([tv1.RandomResizedCrop.get_params(img, scale, ratio) for _ in range(n)])


def box_features(boxes: torch.Tensor, height: int, width: int) -> dict[str, torch.Tensor]:
    top, left, h, w = boxes.double().unbind(1)
    return {
        "area": h * w / (height * width),
        "log_ratio": (w / h).log(),
        "top": top / (height - h + 1),
        "left": left / (width - w + 1),
    }


def ks_pvalues(a: torch.Tensor, b: torch.Tensor, height: int, width: int) -> dict[str, float]:
    fa, fb = box_features(a, height, width), box_features(b, height, width)
    return {k: stats.ks_2samp(fa[k].numpy(), fb[k].numpy()).pvalue for k in fa}


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [(32, 32, (0.08, 1.0), (3 / 4, 4 / 3)), (24, 40, (0.3, 1.0), (0.5, 1.0))],
)
def test_crop_boxes_match_torchvision(height, width, scale, ratio) -> None:
    ref = torchvision_boxes(3000, height, width, scale, ratio)
    ours = sample_crop_boxes(20000, height, width, scale, ratio, gen(1))
    assert ((ours[:, 0] + ours[:, 2] <= height) & (ours[:, 1] + ours[:, 3] <= width)).all()
    for name, p in ks_pvalues(ours, ref, height, width).items():
        assert p > 1e-3, f"{name}: KS p={p:.2g}"
    # the test can fail: a different scale range is detected
    other = sample_crop_boxes(20000, height, width, (scale[0] + 0.1, 1.0), ratio, gen(1))
    assert ks_pvalues(other, ref, height, width)["area"] < 1e-6


def test_crop_fallback_is_torchvisions_centre_crop() -> None:
    # no try can fit a 3:1..4:1 box of >= 90% area into a square: always the fallback
    ref = torchvision_boxes(5, 32, 32, (0.9, 1.0), (3.0, 4.0))
    ours = sample_crop_boxes(5, 32, 32, (0.9, 1.0), (3.0, 4.0), gen())
    assert torch.equal(ours, ref)


def test_recipe_constants() -> None:
    """The strength shorthand is SimCLR's (0.8s, 0.8s, 0.8s, 0.2s); the blur kernel covers
    three of the largest sigma (2) each side, as PIL's full Gaussian, where the image
    allows reflect padding."""
    assert jitter_ranges(strength_jitter(0.5)) == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    assert jitter_ranges(strength_jitter(2.0))[0] == (0.0, 2.6)
    assert jitter_ranges((0.4, 0.4, 0.2, 0.1))[2] == (0.8, 1.2)
    assert [blur_kernel_size(s) for s in (4, 7, 16, 32, 224)] == [7, 13, 13, 13, 13]


def test_jitter_factors_match_torchvision() -> None:
    jitter, p = (0.4, 0.4, 0.2, 0.1), 0.8  # solo-learn's CIFAR jitter: saturation its own
    torch.manual_seed(0)
    ranges = [list(r) for r in jitter_ranges(jitter)]
    ref = torch.tensor([tv1.ColorJitter.get_params(*ranges)[1:] for _ in range(3000)])
    params = sample_jitter(20000, jitter, p, gen(2))
    applied = params.factors[params.applied]
    assert torch.equal(
        params.factors[~params.applied],
        torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(int((~params.applied).sum()), 4),
    )
    assert abs(params.applied.double().mean().item() - p) < 0.015
    for k, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        pvalue = stats.ks_2samp(applied[:, k].numpy(), ref[:, k].numpy()).pvalue
        assert pvalue > 1e-3, f"{name}: KS p={pvalue:.2g}"
    # the test can fail: saturation 0.4 (the strength shorthand's) instead of 0.2 is detected
    wrong = sample_jitter(20000, strength_jitter(0.5), 1.0, gen(2)).factors[:, 2]
    assert stats.ks_2samp(wrong.numpy(), ref[:, 2].numpy()).pvalue < 1e-6


def test_jitter_order_is_uniform_over_permutations() -> None:
    order = sample_jitter(24000, strength_jitter(0.5), 1.0, gen(5)).order
    assert (order.sort(dim=1).values == torch.arange(4)).all()
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
    counts = torch.bincount(codes, minlength=256)
    counts = counts[counts > 0]
    assert len(counts) == 24
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    assert ((order == HUE).float().mean(dim=0) - 0.25).abs().max() < 0.01


# --- probabilities of the simple ops, observed on the outputs ---------------------------


def test_flip_probability() -> None:
    x = images(1000)
    a, b = BatchAugment(AugmentConfig(**{**PLAIN, "flip_p": 0.3}), 32, *RAW)(x, gen())
    plain, mirrored = x.float() / 255, x.flip(-1).float() / 255
    for view in (a, b):
        is_plain = (view - plain).abs().amax(dim=(1, 2, 3)) < 1e-5
        is_mirror = (view - mirrored).abs().amax(dim=(1, 2, 3)) < 1e-5
        assert (is_plain ^ is_mirror).all()
        assert abs(is_mirror.double().mean().item() - 0.3) < 0.05


def test_grayscale_probability() -> None:
    x = images(1000)
    a, b = BatchAugment(AugmentConfig(**{**PLAIN, "grayscale_p": 0.2}), 32, *RAW)(x, gen())
    luma = (x.float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )
    for view in (a, b):
        is_gray = (view - luma).abs().amax(dim=(1, 2, 3)) < 1e-5
        is_plain = (view - x.float() / 255).abs().amax(dim=(1, 2, 3)) < 1e-5
        assert (is_gray ^ is_plain).all()
        assert abs(is_gray.double().mean().item() - 0.2) < 0.04


def high_frequency(views: torch.Tensor) -> torch.Tensor:
    """Mean absolute horizontal gradient per view."""
    return (views[..., 1:] - views[..., :-1]).abs().mean(dim=(1, 2, 3))


def test_blur_switch_smooths() -> None:
    x = images(64)
    sharp = BatchAugment(AugmentConfig(**PLAIN), 32, *RAW)(x, gen())[0]
    torch.testing.assert_close(sharp, x.float() / 255)
    blurred = BatchAugment(AugmentConfig(**PLAIN, blur=True, blur_p=1.0), 32, *RAW)(x, gen())[0]
    assert (high_frequency(blurred) <= high_frequency(sharp) + 1e-6).all()
    assert high_frequency(blurred).mean() < 0.9 * high_frequency(sharp).mean()


def test_rotation_switch_rotates() -> None:
    x = images(64)
    cfg = AugmentConfig(**PLAIN, rotation_p=1.0, rotation_degrees=30.0)
    rotated = BatchAugment(cfg, 32, *RAW)(x, gen())[0]
    assert (rotated - x.float() / 255).abs().mean() > 0.05
    corners = rotated[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners.amax(dim=(1, 2)) == 0).float().mean() > 0.5  # black fill for most angles


# --- statistics of many views: batched vs torchvision pipeline --------------------------

N_IMAGES, N_VIEWS = 32, 32  # 1024 views per pipeline
TOLERANCE = 0.015  # about 3.5 standard deviations of the seed-to-seed difference


def view_stats(views: torch.Tensor) -> dict[str, torch.Tensor]:
    v = views.double()
    return {
        "channel mean": v.mean(dim=(0, 2, 3)),
        "channel std": v.transpose(0, 1).reshape(3, -1).std(dim=1),
        "std of view means": v.mean(dim=(2, 3)).std(dim=0),
        "spatial std": v.std(dim=(2, 3)).mean(dim=0),
        "saturation": (v.amax(dim=1) - v.amin(dim=1)).mean().view(1),
    }


def batched_views(cfg: AugmentConfig, x: torch.Tensor) -> torch.Tensor:
    a, b = BatchAugment(cfg, 32, *RAW)(x.repeat_interleave(N_VIEWS // 2, dim=0), gen(7))
    return torch.cat((a, b))


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[str, float]:
    return max(((k, (a[k] - b[k]).abs().max().item()) for k in a), key=lambda kv: kv[1])


@pytest.fixture(scope="module")
def reference_stats() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = images(N_IMAGES, seed=1)
    view = simclr_view(AugmentConfig(), 32, *RAW)
    torch.manual_seed(0)
    views = torch.stack([view(to_pil(img)) for img in x for _ in range(N_VIEWS)])
    return x, view_stats(views)


def test_view_statistics_match_torchvision(reference_stats) -> None:
    x, ref = reference_stats
    name, diff = largest_difference(view_stats(batched_views(AugmentConfig(), x)), ref)
    assert diff < TOLERANCE, f"{name} differs by {diff:.4f}"


@pytest.mark.parametrize("wrong", [{"color_strength": 1.0}, {"color_p": 0.4}, {"grayscale_p": 0.5}])
def test_view_statistics_detect_a_different_recipe(reference_stats, wrong: dict) -> None:
    x, ref = reference_stats
    _, diff = largest_difference(view_stats(batched_views(AugmentConfig(**wrong), x)), ref)
    assert diff > TOLERANCE


# --- solarization and per-view recipes ---------------------------------------------------


def test_solarize_is_pils() -> None:
    x = images(8)
    ours = (augment.solarize(x.float() / 255, torch.ones(8, dtype=torch.bool), 0.5) * 255).round()
    pil = torch.stack([TF.pil_to_tensor(ImageOps.solarize(to_pil(img), 128)) for img in x])
    assert torch.equal(ours.to(torch.uint8), pil)
    skipped = augment.solarize(x.float() / 255, torch.zeros(8, dtype=torch.bool), 0.5)
    assert torch.equal(skipped, x.float() / 255)
    # the check can fail: another threshold inverts other pixels
    other = (augment.solarize(x.float() / 255, torch.ones(8, dtype=torch.bool), 0.6) * 255).round()
    assert not torch.equal(other.to(torch.uint8), pil)


def solarized_share(views: torch.Tensor, x: torch.Tensor) -> float:
    plain = x.float() / 255
    inverted = torch.where(plain >= 0.5, 1 - plain, plain)
    is_plain = (views - plain).abs().amax(dim=(1, 2, 3)) < 1e-5
    is_inverted = (views - inverted).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (is_plain ^ is_inverted).all()
    return is_inverted.double().mean().item()


def test_each_view_takes_its_own_recipe() -> None:
    """[augment.views]: view 1 solarized with p 0.3, view 0 never; a third view takes the
    list's last value."""
    x = images(1000)
    cfg = AugmentConfig(**PLAIN, views={"solarize_p": [0.0, 0.3]})
    a, b, c = BatchAugment(cfg, 32, *RAW, views=3)(x, gen())
    assert solarized_share(a, x) == 0.0
    assert abs(solarized_share(b, x) - 0.3) < 0.05
    assert abs(solarized_share(c, x) - 0.3) < 0.05
    # one list over all views: one value for every view, as the plain key
    same = AugmentConfig(**PLAIN, views={"solarize_p": 0.3})
    assert all(abs(solarized_share(v, x) - 0.3) < 0.05
               for v in BatchAugment(same, 32, *RAW)(x, gen()))


ASYMMETRIC = AugmentConfig(saturation=0.2, views={"solarize_p": [0.0, 0.9], "grayscale_p": [0.0, 0.5]})
"""An asymmetric recipe (solo-learn's CIFAR one, its second view made far apart)."""


@pytest.fixture(scope="module")
def asymmetric_reference() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Statistics of torchvision's reference pipeline for each view's own recipe."""
    x = images(N_IMAGES, seed=1)
    out = []
    for k in range(2):
        view = simclr_view(ASYMMETRIC.for_view(k), 32, *RAW)
        torch.manual_seed(k)
        out.append(view_stats(torch.stack([view(to_pil(img)) for img in x for _ in range(N_VIEWS)])))
    return x, out


def test_per_view_statistics_match_torchvision_per_view(asymmetric_reference) -> None:
    """Batched and per-sample paths: each view's statistics are those of its own recipe's
    reference pipeline, and not those of the other view's (the control)."""
    x, refs = asymmetric_reference
    batched = BatchAugment(ASYMMETRIC, 32, *RAW)(x.repeat_interleave(N_VIEWS, dim=0), gen(7))
    views = multi_view(ASYMMETRIC, 32, *RAW, (View(), View()))
    torch.manual_seed(3)
    drawn = [views(to_pil(img)) for img in x for _ in range(N_VIEWS)]
    per_sample = [torch.stack([d[k] for d in drawn]) for k in range(2)]
    for k in range(2):
        for path, got in (("batched", batched[k]), ("per-sample", per_sample[k])):
            stats_k = view_stats(got)
            name, diff = largest_difference(stats_k, refs[k])
            assert diff < TOLERANCE, f"{path} view {k}: {name} differs by {diff:.4f}"
            assert largest_difference(stats_k, refs[1 - k])[1] > TOLERANCE


# --- the torchvision pipelines ----------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_views_are_picklable_and_independent(n: int) -> None:
    cfg = AugmentConfig(blur=True, crop=False, rotation_p=0.5)
    views = pickle.loads(pickle.dumps(multi_view(cfg, 32, MEAN, STD, (View(),) * n)))
    torch.manual_seed(0)
    drawn = views(to_pil(images(1)[0]))
    assert len(drawn) == n
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in drawn)
    assert not any(torch.equal(a, b) for i, a in enumerate(drawn) for b in drawn[i + 1:])


def test_eval_transform() -> None:
    small = eval_transform(32, MEAN, STD)(to_pil(images(1)[0]))
    torch.testing.assert_close(small, normalize(images(1), MEAN, STD)[0])
    large = eval_transform(224, MEAN, STD, resize=256)(Image.new("RGB", (320, 280)))
    assert large.shape == (3, 224, 224)


# --- CUDA: the same code gives the same views --------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_the_same_generator() -> None:
    aug = BatchAugment(AugmentConfig(blur=True, rotation_p=0.3), 32, MEAN, STD)
    x = images(64)
    cpu = aug(x, gen(5))
    cuda = aug.cuda()(x.cuda(), gen(5))
    for c, g in zip(cpu, cuda, strict=True):
        assert g.is_cuda
        torch.testing.assert_close(g.cpu(), c, atol=1e-3, rtol=0)
    on_device = aug(x.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert on_device[0].is_cuda and on_device[0].shape == (64, 3, 32, 32)
