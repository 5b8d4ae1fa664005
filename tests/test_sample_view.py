"""The fast per-sample CPU path (transforms.SampleView, Views on file paths) against
torchvision's reference pipeline (transforms.simclr_view).

SampleView draws the reference's parameters in the reference's order, so for one seed
both make the same view wherever they apply the same operation (everything but the blur);
the blur is PIL's, with the reference's sigma law. Given a JPEG path, Views decodes at a
reduced size where every crop allows (Pillow's draft): the crop boxes, read back from
coordinate ramps, still follow torchvision's RandomResizedCrop law. Negative controls
show each check can fail.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from scipy import stats
from test_augment import images, ks_pvalues, to_pil, torchvision_boxes
from torchvision.transforms.v2 import functional as TF

from sslterm.data import transforms
from sslterm.data.augment import BLUR_SIGMA, blur_kernel_size
from sslterm.data.transforms import SampleView, ViewDraw, Views, draft_scale, simclr_view
from sslterm.profile.schema import AugmentConfig

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
NO_BLUR = AugmentConfig(color_strength=1.0, rotation_p=0.3)  # every other op on
ONLY_CROP = AugmentConfig(flip_p=0.0, color_p=0.0, grayscale_p=0.0)
RATIO = (3 / 4, 4 / 3)


def photo(width: int = 90, height: int = 70, seed: int = 0) -> Image.Image:
    """A smooth colourful RGB image (bilinear blobs and edges)."""
    x = images(1, size=max(width, height), seed=seed)[0, :, :height, :width]
    return to_pil(x.contiguous())


# --- the same parameters and steps as torchvision's reference ------------------------------


SOLO_VIEW_2 = AugmentConfig(saturation=0.2, hue=0.0, solarize_p=0.5, rotation_p=0.3)
"""solo-learn's second CIFAR view with a zero hue (ColorJitter then draws no hue factor)
and solarization made frequent."""


@pytest.mark.parametrize("cfg", [NO_BLUR, AugmentConfig(crop=False, grayscale_p=0.5), SOLO_VIEW_2],
                         ids=["strength", "no-crop", "solarize"])
def test_same_seed_same_view_as_torchvision_without_blur(cfg: AugmentConfig) -> None:
    ours, ref = SampleView(cfg, 48, MEAN, STD), simclr_view(cfg, 48, MEAN, STD)
    image = photo()
    for seed in range(30):
        torch.manual_seed(seed)
        a = ours(image)
        torch.manual_seed(seed)
        torch.testing.assert_close(a, ref(image), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    a = ours(image)
    torch.manual_seed(1)
    assert (a - ref(image)).abs().mean() > 0.05  # the check can fail: another draw


def test_every_step_before_the_last_runs_on_uint8_pil_images(monkeypatch) -> None:
    seen: list[tuple[type, str]] = []

    def spy(op):  # noqa: ANN001, ANN202
        def wrapped(img, factor):  # noqa: ANN001, ANN202
            seen.append((type(img), getattr(img, "mode", "")))
            return op(img, factor)
        return wrapped

    monkeypatch.setattr(transforms, "_JITTER_OPS", tuple(spy(op) for op in transforms._JITTER_OPS))
    cfg = AugmentConfig(color_p=1.0, grayscale_p=1.0, flip_p=1.0, blur=True, blur_p=1.0,
                        rotation_p=1.0)
    view = SampleView(cfg, 32, MEAN, STD)
    torch.manual_seed(0)
    draw = view.draw(90, 70)
    assert draw.flip and draw.jitter and draw.gray and draw.sigma and draw.angle is not None
    out = view.pixels(photo(), draw)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (32, 32)
    assert seen == [(Image.Image, "RGB")] * 4
    tensor = view.to_tensor(out)  # the only float step: ToImage, ToDtype, Normalize at once
    ref = TF.normalize(TF.to_dtype(TF.pil_to_tensor(out), torch.float32, scale=True), MEAN, STD)
    torch.testing.assert_close(tensor, ref, atol=1e-5, rtol=0)


# --- the blur: PIL's filter with torchvision's sigma law ----------------------------------


def test_blur_sigma_law_is_torchvisions() -> None:
    view = SampleView(AugmentConfig(blur=True, blur_p=0.4), 32, MEAN, STD)
    torch.manual_seed(0)
    sigmas = [view.draw(40, 40).sigma for _ in range(4000)]
    drawn = np.array([s for s in sigmas if s is not None])
    assert abs(len(drawn) / len(sigmas) - 0.4) < 0.03
    low, high = BLUR_SIGMA
    assert stats.kstest(drawn, "uniform", args=(low, high - low)).pvalue > 1e-3
    # the test can fail: a narrower range is detected
    assert stats.kstest(drawn, "uniform", args=(low, 1.5 - low)).pvalue < 1e-6


def test_blur_is_pils_gaussian_blur_of_the_drawn_sigma() -> None:
    view = SampleView(AugmentConfig(crop=False, flip_p=0.0, color_p=0.0, grayscale_p=0.0,
                                    blur=True, blur_p=1.0), 64, *RAW)
    image = photo(64, 64)
    torch.manual_seed(3)
    draw = view.draw(64, 64)
    expected = image.filter(ImageFilter.GaussianBlur(draw.sigma))
    assert np.array_equal(np.asarray(view.pixels(image, draw)), np.asarray(expected))
    other = image.filter(ImageFilter.GaussianBlur(draw.sigma + 0.5))
    assert not np.array_equal(np.asarray(view.pixels(image, draw)), np.asarray(other))


def test_pil_blur_against_torchvisions_kernel() -> None:
    """The two blurs agree within about a grey level at 224 and at 32 px: the batched
    kernel (``blur_kernel_size``) holds three of the largest sigma each side, as PIL's
    full Gaussian. The control: SimCLR's 10% kernel (3 taps at 32 px) cuts it short and
    blurs visibly less."""
    for size in (224, 32):
        image = photo(size, size)
        for sigma in (0.5, 1.0, 2.0):
            pil = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)), dtype=float)
            tv = TF.gaussian_blur(TF.pil_to_tensor(image), [blur_kernel_size(size)] * 2, [sigma] * 2)
            assert np.abs(pil - tv.permute(1, 2, 0).numpy()).mean() < 1.0, (size, sigma)
    small = photo(32, 32)
    sharpness = {}
    for name, out in (
        ("pil", TF.pil_to_tensor(small.filter(ImageFilter.GaussianBlur(2.0)))),
        ("3 taps", TF.gaussian_blur(TF.pil_to_tensor(small), [3, 3], [2.0] * 2)),
    ):
        sharpness[name] = out.float().diff(dim=-1).abs().mean().item()
    assert sharpness["pil"] < 0.8 * sharpness["3 taps"]


# --- decoding at reduced size (draft) --------------------------------------------------------


def test_draft_scale_keeps_every_box_at_least_its_views_size() -> None:
    def draw(h: int, w: int) -> ViewDraw:
        return ViewDraw((0, 0, h, w), False, None, None, False, None)

    assert draft_scale([draw(300, 260)], [32]) == 8
    assert draft_scale([draw(300, 260), draw(100, 120)], [32, 32]) == 2
    assert draft_scale([draw(300, 260), draw(100, 120)], [32, 96]) == 1
    assert draft_scale([draw(255, 400)], [32]) == 4


def ramp_jpeg(path, width: int, height: int) -> None:  # noqa: ANN001
    """red = column ramp, green = row ramp (0-255 over the image), 4:4:4 quality 95."""
    red = np.linspace(0, 255, width).round()[None, :].repeat(height, 0)
    green = np.linspace(0, 255, height).round()[:, None].repeat(width, 1)
    rgb = np.stack((red, green, np.zeros_like(red)), axis=2).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=95, subsampling=0)


def read_ramp_boxes(views: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Boxes (top, left, h, w) of views of ``ramp_jpeg`` in [0, 1]: a least-squares line
    through the interior of the middle row (red) and column (green). Output pixel j samples
    source coordinate start + (j + 0.5) * length / size (pixel centres at k + 0.5)."""
    size = views.shape[-1]
    j = torch.arange(2, size - 2, dtype=torch.float64) + 0.5
    box = []
    for line, extent in ((views[:, 1, 2:-2, size // 2], height),
                         (views[:, 0, size // 2, 2:-2], width)):
        coord = line.double() * (extent - 1) + 0.5  # source pixel-centre coordinate
        jm, cm = j.mean(), coord.mean(dim=1, keepdim=True)
        slope = ((j - jm) * (coord - cm)).sum(dim=1) / ((j - jm) ** 2).sum()
        start = cm[:, 0] - slope * jm
        box.append((start, slope * size))
    (top, h), (left, w) = box
    return torch.stack((top, left, h, w), dim=1).round().long()


@pytest.fixture(scope="module")
def drafted(tmp_path_factory) -> tuple[torch.Tensor, list[int]]:
    """800 views (32 px) of a 960 x 720 ramp JPEG through Views on its path, the boxes read
    back, and the reduction each one was decoded at."""
    path = tmp_path_factory.mktemp("ramp") / "ramp.jpg"
    ramp_jpeg(path, 960, 720)
    view = SampleView(ONLY_CROP, 32, *RAW)
    views = Views([view])
    torch.manual_seed(0)
    out = torch.stack([views(path)[0] for _ in range(800)])
    torch.manual_seed(0)  # the same draws again, to see which reduction each got
    scales = [draft_scale([view.draw(960, 720)], [32]) for _ in range(800)]
    return read_ramp_boxes(out, 960, 720), scales


def test_draft_decoding_keeps_torchvisions_crop_law(drafted) -> None:
    boxes, scales = drafted
    assert sum(s > 1 for s in scales) > 0.9 * len(scales)  # most crops were decoded small
    assert {1, 2, 4, 8} >= set(scales) and 8 in scales
    ref = torchvision_boxes(3000, 720, 960, ONLY_CROP.crop_scale, RATIO)
    for name, p in ks_pvalues(boxes, ref, 720, 960).items():
        assert p > 1e-3, f"{name}: KS p={p:.2g}"
    # the test can fail: crops of another scale range are told apart
    wrong = torchvision_boxes(3000, 720, 960, (0.2, 1.0), RATIO)
    assert ks_pvalues(boxes, wrong, 720, 960)["area"] < 1e-6


def test_drafted_views_equal_the_full_decodes_crop(tmp_path) -> None:
    """View by view: the box mapped onto the reduced image gives the crop torchvision takes
    from the fully decoded image (to the DCT downscale's error), not a shifted one."""
    path = tmp_path / "photo.jpg"
    photo(640, 480, seed=2).save(path, quality=95)
    view = SampleView(ONLY_CROP, 40, *RAW)
    full = Image.open(path).convert("RGB")
    errors, shifted = [], []
    for seed in range(40):
        torch.manual_seed(seed)
        draw = view.draw(640, 480)
        torch.manual_seed(seed)
        ours = Views([view])(path)[0]
        top, left, h, w = draw.box
        ref = TF.to_dtype(TF.pil_to_tensor(TF.resized_crop(full, top, left, h, w, [40, 40])),
                          torch.float32, scale=True)
        errors.append((ours - ref).abs().mean().item())
        moved = TF.resized_crop(full, top, min(left + w // 5, 640 - w), h, w, [40, 40])
        if left + w // 5 <= 640 - w:
            shifted.append((ours - TF.to_dtype(TF.pil_to_tensor(moved), torch.float32,
                                               scale=True)).abs().mean().item())
    assert max(errors) < 0.02
    assert min(shifted) > 2 * max(errors)


def test_views_of_a_path_and_of_the_decoded_image_draw_alike(tmp_path) -> None:
    """A PNG (no draft) through the path gives exactly the views of the opened image."""
    path = tmp_path / "photo.png"
    photo(80, 60).save(path)
    views = Views([SampleView(NO_BLUR, 32, MEAN, STD), SampleView(NO_BLUR, 16, MEAN, STD)])
    torch.manual_seed(5)
    a = views(path)
    torch.manual_seed(5)
    b = views(Image.open(path).convert("RGB"))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_jpegs_decode_to_rgb(tmp_path, mode: str) -> None:
    path = tmp_path / f"{mode}.jpg"
    photo(200, 150).convert(mode).save(path, quality=95)
    out = Views([SampleView(ONLY_CROP, 32, *RAW)])(path)[0]
    assert out.shape == (3, 32, 32)
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        assert img.mode == mode


def test_per_sample_rng_is_the_global_generator() -> None:
    """Workers seed torch's global generator: the same seed, the same views."""
    views = Views([SampleView(NO_BLUR, 24, MEAN, STD)] * 2)
    image = photo()
    torch.manual_seed(7)
    a = views(image)
    torch.manual_seed(7)
    assert all(torch.equal(x, y) for x, y in zip(a, views(image), strict=True))
    assert not torch.equal(a[0], a[1])


def test_folder_datasets_hand_the_workers_paths(tmp_path) -> None:
    """The per-sample training path reads files itself (to draft); in-memory sets stay."""
    from fakedata import write_image_folder
    from torch.utils.data import Subset

    from sslterm.data.datasets import ClassFolder, FileItems, TensorImageDataset, file_samples
    from sslterm.data.registry import ImageTensors

    write_image_folder(tmp_path, n_train=3, fmt="jpg")
    folder = ClassFolder(tmp_path / "train", ["cat", "dog", "fox"])
    samples = file_samples(Subset(folder, [4, 0, 7]))
    assert samples == [folder.samples[i] for i in (4, 0, 7)]
    assert FileItems(samples)[0] == folder.samples[4]
    memory = TensorImageDataset(ImageTensors(torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                                             torch.zeros(2, dtype=torch.long)))
    assert file_samples(Subset(memory, [0])) is None
