"""Every rank and every image its own augmentation stream (sslterm/data/streams.py), and a
resumed run that continues the stream: through the real CLI and `accelerate launch`, with
the trainer's digest of every view it trains on (``SSLTERM_FAULT_VIEW_DIGESTS``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from fakedata import write_image_folder
from faulthelpers import TINY, cli, resume, start, wait_ended, wait_step
from PIL import Image
from runhelpers import SMOKE, events, only_run

from sslterm.data.datasets import Seeded
from sslterm.data.sampler import ShardedBatches, ShardedBatchSampler
from sslterm.data.transforms import multi_view
from sslterm.data.views import View
from sslterm.profile.schema import AugmentConfig

DIGESTS = {"SSLTERM_FAULT_VIEW_DIGESTS": "1"}


def digests(run: Path, rank: int = 0) -> dict[tuple[int, int], list[list[str]]]:
    """(epoch, micro-batch) -> per image, the digest of each view (the last launch's
    line wins where a resume repeats a micro-batch)."""
    out = {}
    for line in (run / f"views-rank{rank}.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[(record["epoch"], record["micro"])] = record["views"]
    return out


def _flat(d: dict) -> list[str]:
    return [digest for views in d.values() for image in views for digest in image]


def same_image_folder(root: Path) -> Path:
    """An image folder whose training images are all one image: what tells two streams
    apart is then the augmentation alone."""
    write_image_folder(root, classes=("a", "b"), n_train=20, n_test=2, size=32)
    files = sorted((root / "train").rglob("*.png"))
    for f in files[1:]:
        shutil.copyfile(files[0], f)
    return root


def _view_digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.numpy().tobytes()).hexdigest()


def test_the_digest_tells_a_shared_stream_from_two():
    """The negative control for the two-process test: one image, the per-sample views of
    the same (index, seed) items are identical, those of two ranks' items are not."""
    image = Image.new("RGB", (32, 32))
    image.putdata([(i % 251, (7 * i) % 253, (13 * i) % 255) for i in range(32 * 32)])
    dataset = Seeded([(image, 0)] * 8, multi_view(AugmentConfig(), 32, (0.5,) * 3, (0.2,) * 3,
                                                 [View(), View()]))

    def views(rank: int) -> list[str]:
        sampler = ShardedBatchSampler(ShardedBatches(8, 4, rank, 2, seed=0), seed=0)
        return [_view_digest(v) for batch in sampler for item in batch for v in dataset[item][0]]

    assert views(0) == views(0)  # a shared stream is seen as one
    assert not set(views(0)) & set(views(1))
    before = torch.random.get_rng_state()
    dataset[(0, 123)]
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched


@pytest.mark.slow
def test_two_processes_on_the_per_sample_path_draw_different_views(tmp_path):
    """Issue 21's reproduction: with one seed on every rank, every rank's workers drew the
    same crops, flips and colours (100% of one rank's views were the other's)."""
    folder = same_image_folder(tmp_path / "same")
    out = tmp_path / "runs"
    res = cli(out, "run", str(SMOKE), *TINY, "data.dataset=imagefolder", f"data.root={folder}",
              "data.image_size=0", "data.augment=cpu", "data.num_workers=2",
              "launch.num_processes=2", "train.epochs=1", "train.max_steps_per_epoch=2",
              env=DIGESTS)
    assert res.returncode == 0, res.stdout + res.stderr
    run = only_run(out)
    rank0, rank1 = _flat(digests(run, 0)), _flat(digests(run, 1))
    assert len(rank0) == len(rank1) == 2 * 8 * 2  # 2 steps x 8 images x 2 views per rank
    assert len(set(rank0)) == len(rank0)  # every image and view its own draw
    assert not set(rank0) & set(rank1)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["data.augment=cpu"]], ids=["batched", "per-sample"])
def test_a_resumed_run_draws_the_views_of_an_uninterrupted_run(overrides, tmp_path):
    own = ["train.epochs=2", "train.max_steps_per_epoch=4", *overrides]
    whole = start(tmp_path / "whole", *own, env=DIGESTS)
    assert wait_ended(whole) == "finished"
    run = start(tmp_path / "runs", *own, env={**DIGESTS, "SSLTERM_FAULT_STEP_SLEEP": "3"})
    wait_step(run, 2, 1)
    res = cli(run.parent, "stop", run.name, "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    stopped = next(e for e in reversed(events(run)) if e["kind"] == "run_stopped")
    assert 2 <= stopped["step"] < 8  # part-way: the resume has steps left to draw
    resume(run, env=DIGESTS)
    assert wait_ended(run) == "finished"
    want, got = digests(whole), digests(run)
    assert sorted(got) == sorted(want) and len(want) == 8
    assert got == want
