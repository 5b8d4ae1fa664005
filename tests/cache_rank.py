"""One rank of test_cache.py's multi-process memory test, started by ``accelerate launch``:
the data path of a run (training batches, validation views, kNN-style feature passes over
the whole training and held-out splits) on a tensor cache the test built, then this rank's
memory as ``OUT/rank<r>.json``.

    accelerate launch --multi_gpu --num_processes 2 tests/cache_rank.py DATA_ROOT N OUT
"""

from __future__ import annotations

import ctypes
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from sslterm.data.cache import ImageTensors
from sslterm.data.evalset import eval_batches
from sslterm.data.registry import DatasetInfo, Source, Splits
from sslterm.data.sampler import ShardedBatches
from sslterm.methods.base import TWO_GLOBAL_VIEWS
from sslterm.profile.load import load_profile
from sslterm.train.batches import Batches

SMOKE = Path(__file__).resolve().parents[1] / "profiles" / "smoke.toml"


class Unread(Dataset):
    """Only a length: the tensor-cache path never reads an item."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> object:
        raise AssertionError("the tensor-cache path read a dataset item")


def source(root: Path, n: int) -> Source:
    """``n`` random 32 px training images (16 test images), cached under ``root``."""
    info = DatasetInfo("memtest", 10, 32, (0.5,) * 3, (0.25,) * 3, small=True)

    def decode(split: str) -> ImageTensors:
        gen, m = torch.Generator().manual_seed(0), n if split == "train" else 16
        images = torch.randint(0, 256, (m, 3, 32, 32), dtype=torch.uint8, generator=gen)
        return ImageTensors(images, torch.randint(0, 10, (m,), generator=gen))

    return Source(info, Unread(n), Unread(16), root, lambda s: ["memtest", n, s], decode)


def drain(batches: Iterable[object]) -> None:
    """Consume ``batches`` holding none afterwards (a loop variable would keep the last)."""
    for _ in batches:
        pass


def kib(name: str) -> int:
    """A ``/proc/self/status`` field in KiB (``RssAnon``: private anonymous memory), after
    handing the allocator's free memory back (glibc keeps freed batches' pages otherwise),
    so that it counts what is alive."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def mapping_kib(path: Path) -> dict[str, int]:
    """Rss and Pss (its share among the processes mapping the same pages) of ``path``'s
    mappings in this process, from ``/proc/self/smaps``."""
    totals, inside = {"Rss": 0, "Pss": 0}, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0].rstrip(":") in totals:
            totals[fields[0].rstrip(":")] += int(fields[1])
    return totals


def main() -> None:
    root, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    acc = Accelerator(cpu=True)
    rank, world, cpu = acc.process_index, acc.num_processes, torch.device("cpu")
    torch.set_num_threads(1)
    profile = load_profile(SMOKE, ["launch.cpu=true"])
    before = kib("RssAnon")
    splits = Splits(source(root, n), seed=0, val_fraction=0.1)
    sampler = ShardedBatches(len(splits.train), 64, rank, world, seed=0)
    batches = Batches(profile, splits, 32, TWO_GLOBAL_VIEWS, sampler, cpu, rank,
                      acc.main_process_first)
    drain(batches.epoch(0, 0, 4))
    drain(batches.val_views(torch.arange(len(splits.val)).tensor_split(world)[rank], 256))
    for split in ("train", "val", "train", "val"):  # every row, twice: two kNN passes
        rows = torch.arange(len(getattr(splits, split)))
        drain(eval_batches(splits, split, rows, size=32, batch_size=4096, device=cpu,
                           use_tensors=True))
    acc.wait_for_everyone()  # every rank has read every page: now count the sharing
    (cache,) = (root / ".sslterm-cache").glob("memtest-train-*.safetensors")
    record = {"anon_growth_kib": kib("RssAnon") - before, "cache_bytes": cache.stat().st_size,
              **{f"cache_{k.lower()}_kib": v for k, v in mapping_kib(cache).items()}}
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main()
