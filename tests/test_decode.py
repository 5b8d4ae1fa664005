"""The batched decode path (sslterm.data.decode + BatchAugment on padded batches) against
PIL and torchvision's per-sample pipeline, on the CPU (the same code runs on a GPU; the
CUDA-marked tests at the end check that).

- Decoding: JPEGs (baseline, progressive, grayscale, CMYK), PNGs, routed by their header,
  give the pixels PIL gives.
- Crop law: images of different sizes padded into one batch; each view's box, read back
  from coordinate ramps, is the one drawn for its own image and follows torchvision's
  RandomResizedCrop law at that image's size (negative control: the padded size's law).
- Colour law: statistics of many views of decoded JPEGs match torchvision's per-sample
  pipeline on the same images; a different recipe does not.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_augment import (
    TOLERANCE,
    gen,
    images,
    ks_pvalues,
    largest_difference,
    to_pil,
    torchvision_boxes,
    view_stats,
)
from test_multicrop import ramps, read_boxes

from sslterm.data.augment import BatchAugment, sample_views
from sslterm.data.decode import (
    EncodedFiles,
    collate_encoded,
    decode_images,
    device_decodable,
    pad_batch,
    shrink,
)
from sslterm.data.transforms import simclr_view
from sslterm.errors import ProfileError, UserError
from sslterm.profile.load import load_profile
from sslterm.profile.schema import AugmentConfig, DataConfig
from sslterm.train.batches import choose_path

pytestmark = pytest.mark.usefixtures("one_thread")

RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
ONLY_CROP = AugmentConfig(flip_p=0.0, color_p=0.0, grayscale_p=0.0)
RATIO = (3 / 4, 4 / 3)
CPU = torch.device("cpu")


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    x = images(1, size=max(width, height), seed=seed)[0, :, :height, :width]
    return to_pil(x.contiguous())


def save(image: Image.Image, path, **kwargs) -> str:  # noqa: ANN001
    image.save(path, **kwargs)
    return str(path)


@pytest.fixture
def mixed_files(tmp_path) -> list[str]:
    """One of each kind the decoder routes, different sizes."""
    return [
        save(photo(64, 48), tmp_path / "rgb.jpg", quality=90),
        save(photo(50, 70, seed=1), tmp_path / "progressive.jpg", quality=90, progressive=True),
        save(photo(40, 40, seed=2).convert("L"), tmp_path / "gray.jpg", quality=90),
        save(photo(56, 44, seed=3).convert("CMYK"), tmp_path / "cmyk.jpg", quality=90),
        save(photo(30, 36, seed=4), tmp_path / "photo.png"),
        save(photo(33, 31, seed=5), tmp_path / "png-named.JPEG", format="PNG"),
    ]


def encoded(paths: list[str]):  # noqa: ANN201
    files = EncodedFiles([(p, i) for i, p in enumerate(paths)])
    return collate_encoded([files[i] for i in range(len(files))])


# --- decoding ------------------------------------------------------------------------------


def test_the_header_routes_what_the_device_decoder_takes(mixed_files) -> None:
    batch = encoded(mixed_files)
    assert batch.on_device == [True, True, False, False, False, False]
    assert batch.labels.tolist() == list(range(6)) and batch.paths == mixed_files
    # metadata segments before the frame header are skipped (EXIF, ICC profile)
    out = io.BytesIO()
    photo(20, 20).save(out, "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 3000, icc_profile=b"x" * 5000)
    assert device_decodable(out.getvalue())
    assert not device_decodable(out.getvalue()[:100])  # cut before the frame header
    assert not device_decodable(b"")


def test_every_kind_decodes_to_pils_rgb_pixels(mixed_files) -> None:
    decoded = decode_images(encoded(mixed_files), CPU)
    for path, image in zip(mixed_files, decoded, strict=True):
        ref = np.asarray(Image.open(path).convert("RGB"))
        assert image.dtype == torch.uint8 and image.shape == (3, *ref.shape[:2])
        assert np.array_equal(image.permute(1, 2, 0).numpy(), ref), path


def test_a_corrupt_file_is_named(tmp_path, mixed_files) -> None:
    bad = tmp_path / "bad.jpg"
    with open(mixed_files[0], "rb") as f:
        bad.write_bytes(f.read()[:200])  # a header, no scan
    batch = encoded([mixed_files[0], str(bad)])
    assert batch.on_device == [True, True]
    with pytest.raises(UserError, match="bad.jpg"):
        decode_images(batch, CPU)
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(UserError, match="empty.png"):
        decode_images(encoded([str(empty)]), CPU)


def test_shrink_takes_huge_images_down_by_an_integer_factor() -> None:
    x = torch.randint(0, 256, (3, 100, 75), dtype=torch.uint8)
    assert shrink(x, 100) is x
    small = shrink(x, 40)  # factor 3, the last partial cells averaged over what they cover
    assert small.shape == (3, 34, 25) and small.dtype == torch.uint8
    assert small[0, 0, 0] == x[0, :3, :3].double().mean().round()
    assert small[0, -1, 0] == x[0, 99:, :3].double().mean().round()


def test_pad_batch_keeps_each_image_in_its_corner() -> None:
    a = torch.full((3, 4, 6), 7, dtype=torch.uint8)
    b = torch.full((3, 5, 2), 9, dtype=torch.uint8)
    batch, sizes = pad_batch([a, b])
    assert batch.shape == (2, 3, 5, 6) and sizes.tolist() == [[4, 6], [5, 2]]
    assert torch.equal(batch[0, :, :4, :6], a) and batch[0, :, 4:].eq(0).all()
    assert torch.equal(batch[1, :, :5, :2], b) and batch[1, :, :, 2:].eq(0).all()


# --- crop law on a padded batch of different sizes -----------------------------------------

SIZES = [(32, 32), (24, 32), (32, 20), (28, 28)]  # (height, width) of each image
N_EACH = 600


def ramp_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """N_EACH ramps of each size in SIZES, padded to 32 x 32 with zeros."""
    full = ramps(len(SIZES) * N_EACH)
    sizes = torch.tensor(SIZES).repeat_interleave(N_EACH, dim=0)
    for i, (h, w) in enumerate(SIZES):
        rows = slice(i * N_EACH, (i + 1) * N_EACH)
        full[rows, :, h:] = 0
        full[rows, :, :, w:] = 0
    return full, sizes


def test_each_view_is_cropped_inside_its_own_image() -> None:
    """The read-back boxes are exactly the drawn ones: padding never enters a view."""
    x, sizes = ramp_batch()
    x, sizes = x[::50], sizes[::50]
    a, b = BatchAugment(ONLY_CROP, 16, *RAW)(x, gen(1), sizes)
    params = sample_views(ONLY_CROP, len(x), sizes[:, 0], sizes[:, 1], gen(1), views=2)
    drawn = torch.empty(2 * len(x), 4, dtype=torch.long)
    drawn[params.source] = params.boxes
    assert torch.equal(torch.cat((read_boxes(a), read_boxes(b))), drawn)
    h, w = sizes.repeat(2, 1).unbind(1)
    assert ((drawn[:, 0] + drawn[:, 2] <= h) & (drawn[:, 1] + drawn[:, 3] <= w)).all()


def test_crops_follow_torchvisions_law_at_each_images_size() -> None:
    x, sizes = ramp_batch()
    views = BatchAugment(ONLY_CROP, 16, *RAW, views=1)(x, gen(2), sizes)[0]
    boxes = read_boxes(views)
    for i, (h, w) in enumerate(SIZES):
        ours = boxes[i * N_EACH : (i + 1) * N_EACH]
        ref = torchvision_boxes(3000, h, w, ONLY_CROP.crop_scale, RATIO)
        for name, p in ks_pvalues(ours, ref, h, w).items():
            assert p > 1e-3, f"{h}x{w} {name}: KS p={p:.2g}"
    # the test can fail: the 32 x 20 image's boxes are not those of the padded 32 x 32
    narrow = boxes[2 * N_EACH : 3 * N_EACH]
    wrong = torchvision_boxes(3000, 32, 32, ONLY_CROP.crop_scale, RATIO)
    assert min(ks_pvalues(narrow, wrong, 32, 32).values()) < 1e-6


# --- colour law through files: decode path vs torchvision per sample ------------------------

N_IMAGES, N_VIEWS = 32, 32


@pytest.fixture(scope="module")
def jpeg_batch(tmp_path_factory):  # noqa: ANN201
    """N_IMAGES JPEGs of three sizes, encoded, and PIL's decode of each."""
    root = tmp_path_factory.mktemp("jpegs")
    dims = [(40, 32), (32, 44), (36, 36)]
    paths = [save(photo(*dims[i % 3], seed=i), root / f"{i}.jpg", quality=95)
             for i in range(N_IMAGES)]
    return encoded(paths), [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def reference_stats(jpeg_batch) -> dict[str, torch.Tensor]:
    _, pils = jpeg_batch
    view = simclr_view(AugmentConfig(), 32, *RAW)
    torch.manual_seed(0)
    return view_stats(torch.stack([view(img) for img in pils for _ in range(N_VIEWS)]))


def decode_path_views(cfg: AugmentConfig, batch) -> torch.Tensor:  # noqa: ANN001
    decoded = decode_images(batch, CPU)
    padded, sizes = pad_batch(decoded)
    repeat = N_VIEWS // 2
    a, b = BatchAugment(cfg, 32, *RAW)(padded.repeat_interleave(repeat, 0), gen(7),
                                       sizes.repeat_interleave(repeat, 0))
    return torch.cat((a, b))


def test_decode_path_view_statistics_match_torchvision(jpeg_batch, reference_stats) -> None:
    batch, _ = jpeg_batch
    got = view_stats(decode_path_views(AugmentConfig(), batch))
    name, diff = largest_difference(got, reference_stats)
    assert diff < TOLERANCE, f"{name} differs by {diff:.4f}"


@pytest.mark.parametrize("wrong", [{"color_strength": 1.0}, {"color_p": 0.4},
                                   {"grayscale_p": 0.5}])
def test_decode_path_statistics_detect_a_different_recipe(jpeg_batch, reference_stats,
                                                          wrong: dict) -> None:
    batch, _ = jpeg_batch
    got = view_stats(decode_path_views(AugmentConfig(**wrong), batch))
    _, diff = largest_difference(got, reference_stats)
    assert diff > TOLERANCE


# --- which path runs, and why ----------------------------------------------------------------

GPU = torch.device("cuda")


@pytest.mark.parametrize(("data", "small", "device", "files", "path", "why"), [
    ({}, False, GPU, True, "decode", "large images on a GPU (data.decode = 'auto')"),
    ({}, False, CPU, True, "workers", "large images on a CPU (data.decode = 'auto')"),
    ({"decode": "batched"}, False, CPU, True, "decode", "large images, data.decode = 'batched'"),
    ({"decode": "workers"}, False, GPU, True, "workers", "large images, data.decode = 'workers'"),
    ({"augment": "cpu"}, False, GPU, True, "workers", "data.augment = 'cpu'"),
    ({}, True, GPU, True, "cache", "small images, cached as a uint8 tensor"),
    ({"decode": "batched"}, True, GPU, True, "decode", "images outside the cache (data.cache "
                                                       "= false), data.decode = 'batched'"),
    ({"cache": False}, True, GPU, False, "workers", "images outside the cache (data.cache = "
                                                    "false), held in memory (no files to decode "
                                                    "in batch)"),
])
def test_the_path_and_its_reason(data, small, device, files, path, why) -> None:
    assert choose_path(DataConfig(**data), small, device, files) == (path, why)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.decode=batched"], "data.decode: 'batched' decodes image files; synthetic is not a "
                              "folder of image files (use an imagenet dataset or imagefolder)"),
    (["data.dataset=imagenet", "data.augment=cpu", "data.decode=batched"],
     "data.decode: 'batched' augments in batch after decoding, but data.augment = 'cpu' asks "
     "for augmentation per sample in DataLoader workers; set data.augment = 'auto'"),
    (["data.decode=gpu"], "data.decode: must be one of 'auto', 'workers' or 'batched' (got "
                          "'gpu')"),
])
def test_decode_settings_that_cannot_work_are_one_line_errors(overrides, message) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("profiles/smoke.toml", overrides)
    assert str(info.value) == f"<command line>: {message}"


def test_the_conflict_is_shown_at_the_key_set_on_the_command_line(tmp_path) -> None:
    profile = tmp_path / "in.toml"
    profile.write_text('[data]\ndataset = "imagenet"\ndecode = "batched"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(profile, ["data.augment=cpu"])
    assert str(info.value) == ("<command line>: data.augment: must be 'auto' with data.decode = "
                               "'batched' (got 'cpu')")


@pytest.mark.slow
def test_a_short_run_on_the_batched_decode_path_of_an_imagenet_folder(tmp_path) -> None:
    """End to end with ``data.decode = "batched"`` on the CPU: an ImageNet-layout folder of
    JPEGs (and a PNG named .JPEG, as ImageNet has) trains, and run_started says why."""
    from fakedata import write_imagenet
    from runhelpers import SMOKE, events, only_run, sslterm, state

    wnids = ["n01440764", "n01443537"]
    write_imagenet(tmp_path / "imagenet", wnids, n_train=24, n_val=4, size=48)
    photo(40, 52).save(tmp_path / "imagenet" / "train" / wnids[0] / "png_0.JPEG", format="PNG")
    sslterm("-o", str(tmp_path / "runs"), "run", str(SMOKE), "data.dataset=imagenet",
            f"data.root={tmp_path / 'imagenet'}", "data.decode=batched", "data.image_size=32",
            "data.num_workers=2", "train.epochs=1", "train.batch_size=16", "train.val_interval=0",
            "probe.enabled=false", cwd=tmp_path, check=True)
    run = only_run(tmp_path / "runs")
    started = next(e for e in events(run) if e["kind"] == "run_started")
    assert started["augment"] == "decode-cpu"
    assert started["augment_reason"] == "large images, data.decode = 'batched'"
    assert state(run) == "finished"
    assert [e["loss"] > 0 for e in events(run) if e["kind"] == "step"]
    assert "data path: decode-cpu (large images, data.decode = 'batched')" in (
        run / "stdout.log").read_text()


# --- CUDA: nvJPEG and the device augmentation ------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decodes_like_the_cpu(mixed_files) -> None:
    """nvJPEG for the JPEGs it takes (within the IDCTs' rounding), the CPU for the rest."""
    batch = encoded(mixed_files)
    cpu = decode_images(batch, CPU)
    cuda = decode_images(batch, torch.device("cuda"))
    for path, c, g in zip(mixed_files, cpu, cuda, strict=True):
        assert g.is_cuda and g.shape == c.shape, path
        assert (g.cpu().int() - c.int()).abs().float().mean() < 2.0, path


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decode_path_matches_the_cpu_one(jpeg_batch) -> None:
    batch, _ = jpeg_batch
    aug = BatchAugment(AugmentConfig(blur=True), 32, *RAW)
    padded, sizes = pad_batch(decode_images(batch, CPU))
    cpu = aug(padded, gen(3), sizes=sizes)
    padded, sizes = pad_batch(decode_images(batch, torch.device("cuda")))
    assert padded.is_cuda and sizes.is_pinned()
    cuda = aug.cuda()(padded, gen(3), sizes=sizes)  # a CPU generator: the same draws
    for c, g in zip(cpu, cuda, strict=True):
        assert g.is_cuda
        assert (g.cpu() - c).abs().mean() < 0.01  # nvJPEG's IDCT differs by a level or so
