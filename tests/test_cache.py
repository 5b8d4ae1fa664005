"""The uint8 tensor cache: built once, reused while the source is unchanged, rebuilt when not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import (
    all_images,
    fake_images,
    trust_fake_files,
    write_cifar10,
    write_image_folder,
)
from PIL import Image
from safetensors.torch import load_file

from sslterm.data import cache, datasets
from sslterm.data.cache import (
    CACHE_DIRNAME,
    ImageTensors,
    cache_key,
    decode_files,
    file_fingerprint,
    load_or_build,
)
from sslterm.data.registry import Splits, build_splits
from sslterm.profile.schema import DataConfig
from sslterm.runs.launcher import free_port

pytestmark = pytest.mark.usefixtures("one_thread")


def tensors(n: int = 6, seed: int = 0) -> ImageTensors:
    images = torch.from_numpy(fake_images(n, size=8, seed=seed))
    return ImageTensors(images, torch.arange(n, dtype=torch.int64))


class Builder:
    """Counts how often the cache had to build."""

    def __init__(self, result: ImageTensors) -> None:
        self.result, self.calls = result, 0

    def __call__(self) -> ImageTensors:
        self.calls += 1
        return self.result


def cache_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / CACHE_DIRNAME).iterdir())


def test_built_once_then_reused(tmp_path):
    build = Builder(tensors())
    first = load_or_build(tmp_path, "toy-train", {"files": [["a", 1, 2]]}, build)
    second = load_or_build(tmp_path, "toy-train", {"files": [["a", 1, 2]]}, build)
    assert build.calls == 1
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)

    (name,) = cache_files(tmp_path)  # one file, no temp files left behind
    assert name.startswith("toy-train-") and name.endswith(".safetensors")
    stored = load_file(tmp_path / CACHE_DIRNAME / name)
    assert stored["images"].dtype == torch.uint8 and stored["images"].shape == (6, 3, 8, 8)
    assert stored["labels"].dtype == torch.int64


def test_changed_fingerprint_rebuilds_and_replaces_the_old_file(tmp_path):
    load_or_build(tmp_path, "toy-train", ["v1"], Builder(tensors(seed=1)))
    load_or_build(tmp_path, "toy-test", ["v1"], Builder(tensors(seed=1)))
    build = Builder(tensors(seed=2))
    result = load_or_build(tmp_path, "toy-train", ["v2"], build)
    assert build.calls == 1 and torch.equal(result.images, tensors(seed=2).images)
    names = cache_files(tmp_path)
    assert len(names) == 2 and f"toy-train-{cache_key(['v2'])}.safetensors" in names


def test_unreadable_cache_is_rebuilt(tmp_path):
    load_or_build(tmp_path, "toy-train", ["v1"], Builder(tensors()))
    (name,) = cache_files(tmp_path)
    path = tmp_path / CACHE_DIRNAME / name
    path.write_bytes(path.read_bytes()[:100])  # a truncated file
    build = Builder(tensors())
    assert torch.equal(load_or_build(tmp_path, "toy-train", ["v1"], build).images, tensors().images)
    assert build.calls == 1
    assert load_file(path)["images"].shape == (6, 3, 8, 8)


def test_unwritable_root_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "data"
    root.mkdir()
    (root / CACHE_DIRNAME).write_text("a file where the cache folder should be")
    build = Builder(tensors())
    load_or_build(root, "toy-train", ["v1"], build)
    load_or_build(root, "toy-train", ["v1"], build)
    assert build.calls == 1
    assert len(list((tmp_path / "xdg" / "sslterm").glob("*/toy-train-*.safetensors"))) == 1


def test_fingerprint_sees_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    before = cache_key(file_fingerprint([path]))
    assert cache_key(file_fingerprint([path])) == before
    os.utime(path, ns=(1, 1))
    touched = cache_key(file_fingerprint([path]))
    path.write_bytes(b"abcd")
    os.utime(path, ns=(1, 1))
    assert len({before, touched, cache_key(file_fingerprint([path]))}) == 3


def test_decode_files_keeps_order_and_fits_sizes(tmp_path):
    images = fake_images(5, size=12, seed=3)
    paths = []
    for i, chw in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(chw.transpose(1, 2, 0)).save(paths[-1])
    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "odd.png")
    paths.append(tmp_path / "odd.png")

    one = decode_files(paths, [0, 1, 2, 3, 4, 5], size=12, threads=1)
    three = decode_files(paths, [0, 1, 2, 3, 4, 5], size=12, threads=3)
    assert torch.equal(one.images, three.images) and one.labels.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(one.images[:5].numpy(), images)
    assert one.images.shape == (6, 3, 12, 12)
    assert one.images[5, :, 6, 6].tolist() == [200, 10, 10]


def counting(monkeypatch, module, name: str) -> list[int]:
    """Wrap ``module.name`` so a test can count real decodes."""
    calls: list[int] = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_image_folder_cache_follows_the_source(tmp_path, monkeypatch):
    write_image_folder(tmp_path, n_train=3, n_test=2, size=8)
    decodes = counting(monkeypatch, datasets, "decode_files")
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), val_fraction=0.5)

    first = build_splits(cfg, seed=0)
    train, val = first.tensors("train"), first.tensors("val")  # one decode of the full split
    assert len(decodes) == 1 and len(train) + len(val) == 9
    build_splits(cfg, seed=1).tensors("train")  # another split of the same cached set
    assert len(decodes) == 1

    changed = tmp_path / "train" / "cat" / "0000.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(changed)
    os.utime(changed, ns=(10**18, 10**18))  # a distinct mtime even on coarse clocks
    full = build_splits(cfg.model_copy(update={"val_fraction": 0.0}), seed=0).tensors("train")
    assert len(decodes) == 2
    assert all_images(full)[0, :, 0, 0].tolist() == [1, 2, 3]
    assert len([n for n in cache_files(tmp_path) if n.startswith("imagefolder-train-")]) == 1


def test_cifar_cache_is_reused_across_runs(tmp_path, monkeypatch):
    fake = write_cifar10(tmp_path, n_train=20, n_test=5)
    trust_fake_files(monkeypatch, tmp_path)
    decodes = counting(monkeypatch, datasets, "hwc_to_tensors")
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path))
    build_splits(cfg, seed=0).tensors("test")
    again = build_splits(cfg, seed=0).tensors("test")
    assert len(decodes) == 1
    np.testing.assert_array_equal(all_images(again).numpy(), fake.test_images)


def test_cache_off_writes_nothing(tmp_path):
    cfg = DataConfig(dataset="synthetic", root=str(tmp_path), synthetic_size=32, cache=False)
    assert len(build_splits(cfg, seed=0).tensors("train")) > 0
    assert not (tmp_path / CACHE_DIRNAME).exists()


def test_synthetic_cache_is_keyed_by_its_parameters(tmp_path, monkeypatch):
    keys = []
    real = cache.cache_key

    def spy(fingerprint):
        keys.append(real(fingerprint))
        return keys[-1]

    monkeypatch.setattr(cache, "cache_key", spy)
    for seed, size in ((0, 32), (1, 32), (0, 48)):
        cfg = DataConfig(
            dataset="synthetic", root=str(tmp_path), synthetic_size=32, image_size=size
        )
        build_splits(cfg, seed=seed).tensors("test")
    assert len(set(keys)) == 3


def test_image_tensors_validate_their_layout():
    with pytest.raises(ValueError, match="uint8"):
        ImageTensors(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageTensors(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_auto_keeps_the_cache_on_the_gpu_only_where_it_fits_in_half_the_free_memory():
    from sslterm.train.batches import keep_resident

    cifar = 50_000 * 3 * 32 * 32  # 147 MiB
    assert keep_resident("auto", cifar, 80 << 30)
    assert keep_resident("auto", cifar, 2 * cifar)
    assert not keep_resident("auto", cifar, 2 * cifar - 2)
    assert keep_resident("gpu", cifar, 0)  # asked for explicitly: the user's call


# ---------------------------------------------------------------- the mapped cache (issue 21 item 5)


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory mapping holds ``tensor``'s data (Linux ``/proc/self/maps``), or
    None for anonymous memory (the heap: a copy)."""
    ptr = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= ptr < high:
            return fields[5] if len(fields) > 5 else None
    return None


def test_a_cache_file_is_mapped_and_gives_the_tensors_it_holds(tmp_path):
    built = load_or_build(tmp_path, "toy-train", ["v1"], Builder(tensors()))
    (name,) = cache_files(tmp_path)
    path = str(tmp_path / CACHE_DIRNAME / name)
    assert mapped_file(built.images) == path  # the builder maps the file it wrote, too
    build = Builder(tensors())
    loaded = load_or_build(tmp_path, "toy-train", ["v1"], build)
    assert build.calls == 0 and mapped_file(loaded.images) == path
    stored = load_file(path)  # safetensors' own reading: what the cache held before
    assert torch.equal(loaded.images, stored["images"]) and torch.equal(loaded.images,
                                                                         tensors().images)
    assert loaded.labels.dtype == torch.int64 and torch.equal(loaded.labels, stored["labels"])
    loaded.images[0] = 0  # copy-on-write: the file keeps its images
    assert torch.equal(load_file(path)["images"], tensors().images)


def _truncated_in_the_data(blob: bytes) -> bytes:
    return blob[:-10]


def _foreign(blob: bytes) -> bytes:
    from safetensors.torch import save

    return save({"images": tensors().images, "labels": tensors().labels})  # no sslterm marker


def _wrong_shape(blob: bytes) -> bytes:
    from safetensors.torch import save

    return save({"images": tensors().images.flatten(1), "labels": tensors().labels},
                metadata={"format": "sslterm-image-cache", "version": str(cache.CACHE_VERSION)})


@pytest.mark.parametrize("damage", [
    lambda blob: b"", lambda blob: blob[:5], lambda blob: blob[:100], _truncated_in_the_data,
    lambda blob: b"\xff" * 8 + blob[8:], lambda blob: b"not a safetensors file at all",
    _foreign, _wrong_shape,
], ids=["empty", "cut-in-length", "cut-in-header", "cut-in-data", "huge-header-length",
        "garbage", "foreign", "wrong-shape"])
def test_a_damaged_or_foreign_cache_file_is_rebuilt(tmp_path, damage):
    load_or_build(tmp_path, "toy-train", ["v1"], Builder(tensors()))
    (name,) = cache_files(tmp_path)
    path = tmp_path / CACHE_DIRNAME / name
    path.write_bytes(damage(path.read_bytes()))
    build = Builder(tensors())
    rebuilt = load_or_build(tmp_path, "toy-train", ["v1"], build)
    assert build.calls == 1 and torch.equal(rebuilt.images, tensors().images)
    assert torch.equal(load_file(path)["images"], tensors().images)


def test_split_rows_index_the_mapped_cache_instead_of_copying_it(tmp_path):
    cfg = DataConfig(dataset="synthetic", root=str(tmp_path), synthetic_size=40)
    build_splits(cfg, seed=0).tensors("train")  # builds the files
    splits = build_splits(cfg, seed=0)
    train, val, test = (splits.tensors(s) for s in ("train", "val", "test"))
    (path,) = (tmp_path / CACHE_DIRNAME).glob("synthetic-train-*.safetensors")
    assert mapped_file(train.source.images) == str(path)
    # one mapping for the split, every evaluation pass: no copy of the full set or its rows
    full = train.source.images
    assert val.source.images is full and splits.tensors("train").source.images is full
    assert mapped_file(test.source.images) != mapped_file(full)
    assert len(train) == len(splits.train) and len(val) == len(splits.val) and len(test) == 10
    assert train.nbytes == len(train) * 3 * 32 * 32
    stored = load_file(path)
    at = torch.tensor([3, 0, 7])
    assert torch.equal(train.take(at), stored["images"][splits.train_indices[at]])
    assert torch.equal(val.labels, stored["labels"][splits.val_indices])
    resident = train.to(torch.device("cpu"), chunk_bytes=5 * 3 * 32 * 32)  # 5 rows a chunk
    assert torch.equal(resident.images, stored["images"][splits.train_indices])
    assert torch.equal(resident.labels, train.labels)


@pytest.mark.slow
def test_two_ranks_share_one_mapped_copy_of_the_cache(tmp_path):
    """Issue 21 item 5: each rank read the whole file (two copies for a moment), kept the
    full split and a copy of its training rows: about 2 private copies per rank, 125 GB per
    node for a 64 px ImageNet on 8 ranks. Mapped, the ranks' private memory holds no copy and
    the page cache's one copy is shared (each rank's proportional share is half of it)."""
    import cache_rank

    root, out = tmp_path / "data", tmp_path / "out"
    root.mkdir(), out.mkdir()
    n = 32768  # 96 MiB of 32 px images
    Splits(cache_rank.source(root, n), seed=0, val_fraction=0.1).tensors("train")  # the file
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           cache_rank.__file__, str(root), str(n), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in range(2):
        record = json.loads((out / f"rank{rank}.json").read_text())
        print(f"rank {rank}: {record}")  # with -s: the figures of benchmarks/RESULTS.md
        size = record["cache_bytes"] / 1024
        assert record["anon_growth_kib"] < size / 4, record  # no private copy (before: ~2)
        assert record["cache_rss_kib"] > 0.95 * size, record  # every page read, mapped ...
        assert record["cache_pss_kib"] < 0.6 * size, record  # ... and shared by the 2 ranks
