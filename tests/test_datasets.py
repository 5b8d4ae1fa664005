"""Datasets read through the real torchvision classes from tiny files in the real formats."""

from __future__ import annotations

import hashlib
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import (
    all_images,
    write_cifar10,
    write_cifar100,
    write_class_list,
    write_image_folder,
    write_imagenet,
    write_svhn,
)
from fakedata import trust_fake_files as trust
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from sslterm.data import subsets
from sslterm.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    TensorImageDataset,
    Transformed,
    generate_synthetic,
)
from sslterm.data.registry import (
    DATASETS,
    DatasetInfo,
    Source,
    build_splits,
    check_data,
    register_dataset,
    split_indices,
)
from sslterm.errors import UserError
from sslterm.profile.schema import DataConfig

pytestmark = pytest.mark.usefixtures("one_thread")

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


def data(root: Path, dataset: str, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), **kw)


def chw(image) -> np.ndarray:
    return np.asarray(image).transpose(2, 0, 1)


def closed_port_url(path: str) -> str:
    """A local URL nothing listens on: connecting fails at once, with or without a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def offline(monkeypatch) -> None:
    """Point every torchvision download at a closed local port, so no test reaches the internet."""
    for cls in (CIFAR10, CIFAR100):
        monkeypatch.setattr(cls, "url", closed_port_url(cls.filename))
    table = {s: [closed_port_url(n), n, md5] for s, (_, n, md5) in SVHN.split_list.items()}
    monkeypatch.setattr(SVHN, "split_list", table)


# ---------------------------------------------------------------- CIFAR / SVHN


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn}
CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_torchvision_formats_round_trip(tmp_path, monkeypatch, name):
    fake = WRITERS[name](tmp_path, n_train=40, n_test=12)
    trust(monkeypatch, tmp_path)
    splits = build_splits(data(tmp_path, name, download=False), seed=7)

    assert (splits.info.name, splits.info.num_classes) == (name, CLASSES[name])
    assert splits.info.image_size == 32 and splits.info.small
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 12)

    image, label = splits.val[1]
    row = int(splits.val_indices[1])
    assert image.mode == "RGB" and image.size == (32, 32)
    np.testing.assert_array_equal(chw(image), fake.train_images[row])
    assert label == fake.train_labels[row]

    train, test = splits.tensors("train"), splits.tensors("test")
    np.testing.assert_array_equal(all_images(train).numpy(), fake.train_images[splits.train_indices])
    np.testing.assert_array_equal(train.labels.numpy(), fake.train_labels[splits.train_indices])
    np.testing.assert_array_equal(all_images(test).numpy(), fake.test_images)
    np.testing.assert_array_equal(test.labels.numpy(), fake.test_labels)


def test_cifar_labels_and_info(tmp_path, monkeypatch):
    write_cifar100(tmp_path, n_train=40, n_test=4)
    trust(monkeypatch, tmp_path)
    labels = build_splits(data(tmp_path, "cifar100"), seed=0).tensors("train").labels
    assert labels.max() > 9  # the fine labels, not a 10-class reading

    write_cifar10(tmp_path, n_train=10, n_test=4)
    trust(monkeypatch, tmp_path)
    info = build_splits(data(tmp_path, "cifar10", image_size=64), seed=0).info
    assert info == DatasetInfo("cifar10", 10, 64, CIFAR10_MEAN, CIFAR10_STD, small=True)


def test_svhn_digit_zero_is_label_zero(tmp_path, monkeypatch):
    fake = write_svhn(tmp_path, n_train=20, n_test=10)
    trust(monkeypatch, tmp_path)
    test = build_splits(data(tmp_path, "svhn"), seed=0).tensors("test")
    assert 0 in fake.test_labels and test.labels.tolist() == fake.test_labels.tolist()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("svhn", "train_32x32.mat"),
    ],
)

def test_failed_download_is_a_fast_one_line_error(tmp_path, monkeypatch, name, expected):
    offline(monkeypatch)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        build_splits(data(tmp_path / "empty", name, download=True), seed=0)
    message = str(err.value)
    assert time.monotonic() - start < 10
    assert "\n" not in message
    assert message.startswith(f"{name}: download failed")
    assert str(tmp_path / "empty") in message and expected in message


def test_missing_files_without_download_name_the_path(tmp_path):
    with pytest.raises(UserError, match="set data.download = true") as err:
        build_splits(data(tmp_path, "svhn", download=False), seed=0)
    assert f"missing {tmp_path}/{{train_32x32.mat, test_32x32.mat}};" in str(err.value)


def test_corrupt_files_fail_torchvisions_md5_check(tmp_path):
    write_cifar10(tmp_path, n_train=10, n_test=4)  # tiny files cannot match the real md5s
    with pytest.raises(UserError, match="md5 check") as err:
        build_splits(data(tmp_path, "cifar10", download=False), seed=0)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


# ---------------------------------------------------------------- train/val split


def test_split_indices_are_seeded_disjoint_and_complete():
    train, val = split_indices(100, 0.1, seed=42)
    assert len(val) == 10 and len(train) == 90
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    again_train, again_val = split_indices(100, 0.1, seed=42)
    assert torch.equal(again_val, val) and torch.equal(again_train, train)
    assert not torch.equal(split_indices(100, 0.1, seed=43)[1], val)
    assert len(split_indices(100, 0.0, seed=0)[1]) == 0
    assert len(split_indices(3, 0.9, seed=0)[0]) == 1  # never an empty training split


def test_splits_follow_the_seed(tmp_path):
    cfg = data(tmp_path, "synthetic", synthetic_size=64, cache=False)
    a, b = build_splits(cfg, seed=1), build_splits(cfg, seed=1)
    assert torch.equal(a.val_indices, b.val_indices)
    assert not torch.equal(a.val_indices, build_splits(cfg, seed=2).val_indices)


# ---------------------------------------------------------------- image folders


def test_image_folder_png_round_trip(tmp_path):
    fake = write_image_folder(tmp_path, classes=("fox", "cat", "dog"), n_train=4, n_test=2)
    splits = build_splits(data(tmp_path, "imagefolder", val_fraction=0.25), seed=0)

    assert splits.info.num_classes == 3 and splits.info.image_size == 16 and splits.info.small
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 6)
    assert splits.test.classes == ["cat", "dog", "fox"]

    test = splits.tensors("test")
    np.testing.assert_array_equal(all_images(test).numpy(), fake.test_images)
    np.testing.assert_array_equal(test.labels.numpy(), fake.test_labels)
    val = splits.tensors("val")
    np.testing.assert_array_equal(all_images(val).numpy(), fake.train_images[splits.val_indices])
    image, label = splits.train[0]
    row = int(splits.train_indices[0])
    np.testing.assert_array_equal(chw(image), fake.train_images[row])
    assert label == fake.train_labels[row]


def test_image_folder_val_dir_jpeg_and_requested_size(tmp_path):
    fake = write_image_folder(tmp_path, n_train=2, n_test=1, size=24, fmt="jpg", test_dir="val")
    splits = build_splits(data(tmp_path, "imagefolder", image_size=48), seed=0)
    assert splits.info.image_size == 48  # what the model sees ...
    test = splits.tensors("test")
    assert all_images(test).shape == (3, 3, 24, 24)  # ... while the cache keeps the stored size
    error = (all_images(test).float() - torch.from_numpy(fake.test_images).float()).abs().mean()
    assert error < 20  # JPEG is lossy, but it is the same picture


def test_image_folder_fits_other_sizes_into_the_first_ones(tmp_path):
    write_image_folder(tmp_path, n_train=2, n_test=1, size=16)
    write_image_folder(tmp_path / "big", classes=("cat",), n_train=1, n_test=1, size=40)
    (tmp_path / "big/train/cat/0000.png").rename(tmp_path / "train/cat/0099.png")
    train = build_splits(data(tmp_path, "imagefolder", val_fraction=0), seed=0).tensors("train")
    assert all_images(train).shape == (7, 3, 16, 16)


def test_image_folder_of_large_images_is_not_cached(tmp_path):
    write_image_folder(tmp_path, n_train=1, n_test=1, size=80)
    splits = build_splits(data(tmp_path, "imagefolder"), seed=0)
    assert not splits.info.small and splits.info.image_size == 80
    with pytest.raises(UserError, match="data.augment = 'cpu'"):
        splits.tensors("train")


def test_image_folder_errors_name_the_folder(tmp_path):
    write_image_folder(tmp_path, n_train=1, n_test=1)
    (tmp_path / "test").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="no test/ or val/ folder"):
        build_splits(data(tmp_path, "imagefolder"), seed=0)

    write_image_folder(tmp_path, classes=("cat", "dog"), n_train=1, n_test=1)
    with pytest.raises(UserError, match=r"1 of 3 class folders missing .*fox"):
        build_splits(data(tmp_path, "imagefolder"), seed=0)

    write_image_folder(tmp_path, classes=("cat", "dog", "fox", "owl"), n_train=0, n_test=1)
    with pytest.raises(UserError, match="classes not in train/ .*owl"):
        build_splits(data(tmp_path, "imagefolder"), seed=0)

    with pytest.raises(UserError, match=re.escape(str(tmp_path / "nowhere" / "train"))):
        build_splits(data(tmp_path / "nowhere", "imagefolder"), seed=0)


# ---------------------------------------------------------------- ImageNet and SCAN subsets


def test_imagenet_train_and_val_share_labels(tmp_path):
    fake = write_imagenet(tmp_path, WNIDS[:3], n_train=2, n_val=1)
    splits = build_splits(data(tmp_path, "imagenet", val_fraction=0.5), seed=0)
    assert splits.info.num_classes == 3 and splits.info.image_size == 224
    assert not splits.info.small
    assert [label for _, label in splits.test] == fake.test_labels.tolist()
    assert {Path(p).parent.name for p, _ in splits.test.samples} == set(WNIDS[:3])
    image, _ = splits.train[0]
    assert image.mode == "RGB" and image.size == (8, 8)
    with pytest.raises(UserError, match="too large"):
        splits.tensors("test")

    (tmp_path / "val" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").unlink()
    (tmp_path / "val" / WNIDS[0]).rmdir()
    with pytest.raises(
        UserError, match=f"missing in {re.escape(str(tmp_path / 'val'))} .*{WNIDS[0]}"
    ):
        build_splits(data(tmp_path, "imagenet"), seed=0)


def test_local_class_list_sets_classes_and_label_order(tmp_path):
    write_imagenet(tmp_path, WNIDS, n_train=2, n_val=1)
    chosen = [WNIDS[3], WNIDS[1]]  # not sorted: the label is the line index
    listing = write_class_list(tmp_path / "mine.txt", chosen)
    splits = build_splits(data(tmp_path, "imagenet50", class_list=str(listing)), seed=0)
    assert splits.info.name == "imagenet50" and splits.info.num_classes == 2
    by_wnid = {Path(p).parent.name: label for p, label in splits.test.samples}
    assert by_wnid == {WNIDS[3]: 0, WNIDS[1]: 1}
    assert len(splits.train) + len(splits.val) == 4


def test_missing_wnid_folder_names_the_folder_to_fill(tmp_path):
    write_imagenet(tmp_path, WNIDS[:2])
    listing = write_class_list(tmp_path / "list.txt", WNIDS[:3])
    with pytest.raises(UserError) as err:
        build_splits(data(tmp_path, "imagenet100", class_list=str(listing)), seed=0)
    message = str(err.value)
    assert message.startswith("imagenet100: 1 of 3 class folders missing")
    assert str(tmp_path / "train") in message and WNIDS[2] in message


# The sha256 of data/imagenet_subsets/imagenet_{50,100,200}.txt as published in
# wvangansbeke/Unsupervised-Classification (master), written here independently of the code.
PUBLISHED_SHA256 = {
    50: "58cbf7955f5591af5bdda091ce2144d9ed18a3e70866341d17689ab807a7db90",
    100: "583680dd19e33fd7f80fe50e44c385fc4a6ebb977fbcc9409daf3ba7aa275f24",
    200: "14cb3f6b262c342b693278e0986b0f86cd3194184a5ef9ce606bdb8661f47a51",
}


@pytest.mark.parametrize("n", sorted(PUBLISHED_SHA256))
def test_packaged_scan_lists_are_the_published_files(n):
    path = Path(subsets.__file__).parent / "imagenet_subsets" / f"imagenet_{n}.txt"
    blob = path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == PUBLISHED_SHA256[n] == subsets.SCAN_SHA256[n]
    wnids = subsets.scan_class_list(n)
    assert len(wnids) == n and all(re.fullmatch(r"n\d{8}", w) for w in wnids)


def test_scan_subset_runs_offline_with_only_the_root(tmp_path, monkeypatch):
    """Every user gets the SCAN classes, in list order, with no class list and no network."""
    offline(monkeypatch)
    wnids = subsets.scan_class_list(50)
    write_imagenet(tmp_path, [*wnids, WNIDS[0]], n_train=1, n_val=1)  # one class too many
    splits = build_splits(data(tmp_path, "imagenet50", download=False), seed=0)
    assert splits.info.num_classes == 50
    by_wnid = {Path(p).parent.name: label for p, label in splits.test.samples}
    assert by_wnid == {w: i for i, w in enumerate(wnids)}
    assert list(tmp_path.glob("imagenet_*.txt")) == []  # nothing fetched into the root


def test_an_edited_packaged_list_is_refused(tmp_path, monkeypatch):
    write_imagenet(tmp_path, WNIDS, n_train=1, n_val=1)
    write_class_list(tmp_path / "pkg" / "imagenet_200.txt", WNIDS)
    monkeypatch.setattr(subsets, "PACKAGED_DIR", tmp_path / "pkg")
    with pytest.raises(UserError, match="has sha256 .*expected 14cb3f6b") as err:
        build_splits(data(tmp_path, "imagenet200"), seed=0)
    assert "data.class_list" in str(err.value)

    monkeypatch.setattr(subsets, "PACKAGED_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match="packaged class list .* is missing"):
        build_splits(data(tmp_path, "imagenet200"), seed=0)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_balanced(tmp_path):
    cfg = data(tmp_path, "synthetic", synthetic_size=96, synthetic_classes=3, cache=False)
    a, b = build_splits(cfg, seed=5), build_splits(cfg, seed=5)
    assert torch.equal(all_images(a.tensors("train")), all_images(b.tensors("train")))
    assert torch.equal(all_images(a.tensors("test")), all_images(b.tensors("test")))
    other = all_images(build_splits(cfg, seed=6).tensors("test"))
    assert not torch.equal(all_images(a.tensors("test")), other)

    assert a.info.num_classes == 3 and a.info.image_size == 32 and a.info.small
    assert len(a.train) + len(a.val) == 96 and len(a.test) == 24
    counts = torch.cat([a.tensors("train").labels, a.tensors("val").labels]).bincount()
    assert counts.tolist() == [32, 32, 32]
    image, label = a.test[0]
    assert image.mode == "RGB" and image.size == (32, 32) and 0 <= label < 3

    big = build_splits(data(tmp_path, "synthetic", image_size=48, cache=False), seed=0)
    assert all_images(big.tensors("test")).shape[-2:] == (48, 48)


def test_synthetic_classes_are_learnable():
    """A nearest-centroid classifier on 8x8 thumbnails beats chance by far."""

    def thumbs(split: str):
        t = generate_synthetic(400 if split == "train" else 200, 8, 32, 0, split)
        x = torch.nn.functional.avg_pool2d(t.images.float() / 255, 4).flatten(1)
        return x, t.labels

    x, y = thumbs("train")
    centroids = torch.stack([x[y == c].mean(0) for c in range(8)])
    xt, yt = thumbs("test")
    accuracy = (torch.cdist(xt, centroids).argmin(1) == yt).float().mean()
    assert accuracy > 0.5  # chance is 0.125


# ---------------------------------------------------------------- registry and wrappers


def test_registry_adds_datasets_and_rejects_unknown_ones(tmp_path):
    tiny = generate_synthetic(20, 2, 8, 0, "tiny")

    @register_dataset("tiny-test-set")
    def build(cfg, seed):
        info = DatasetInfo("tiny-test-set", 2, 8, (0.5,) * 3, (0.25,) * 3, small=True)
        ds = TensorImageDataset(tiny)
        return Source(info, ds, ds, Path(cfg.root), lambda s: ["tiny", s], lambda s: tiny)

    try:
        cfg = data(tmp_path, "synthetic").model_copy(update={"dataset": "tiny-test-set"})
        splits = build_splits(cfg, seed=0)
        assert torch.equal(all_images(splits.tensors("test")), tiny.images)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("tiny-test-set")(build)
    finally:
        DATASETS.pop("tiny-test-set")

    with pytest.raises(UserError, match="unknown dataset 'tiny-test-set'; known: cifar10"):
        build_splits(cfg, seed=0)


def test_transformed_applies_to_images_only(tmp_path):
    splits = build_splits(data(tmp_path, "synthetic", synthetic_size=16, cache=False), seed=0)
    wrapped = Transformed(splits.train, lambda image: image.size)
    assert len(wrapped) == len(splits.train)
    assert wrapped[2] == ((32, 32), splits.train[2][1])


# ---------------------------------------------------------------- pre-flight check


def test_check_data_fails_early_without_walking_the_files(tmp_path):
    root = tmp_path / "data"
    write_imagenet(root, WNIDS, n_train=1, n_val=1)
    listing = str(write_class_list(tmp_path / "list.txt", WNIDS[:3]))
    check_data(data(root, "imagenet100", class_list=listing))
    check_data(data(root, "imagenet"))

    for image in (root / "train" / WNIDS[0]).iterdir():
        image.unlink()  # an empty class folder: only a walk over the files finds it
    check_data(data(root, "imagenet"))
    with pytest.raises(UserError, match="Found no valid file"):
        build_splits(data(root, "imagenet"), seed=0)

    (root / "val" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG").unlink()
    (root / "val" / WNIDS[1]).rmdir()
    with pytest.raises(UserError, match=f"imagenet100: 1 of 3 class folders missing .*{WNIDS[1]}"):
        check_data(data(root, "imagenet100", class_list=listing))


def test_check_data_runs_torchvision_downloads(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(UserError, match="cifar10: download failed"):
        check_data(data(tmp_path, "cifar10"))
    write_cifar10(tmp_path, n_train=10, n_test=4)
    trust(monkeypatch, tmp_path)
    check_data(data(tmp_path, "cifar10"))
    check_data(data(tmp_path / "synthetic", "synthetic"))
    assert not (tmp_path / "synthetic").exists()  # nothing to check, nothing written
