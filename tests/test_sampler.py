"""Sharded per-epoch batches: every rank cuts the same global batches, so N processes see
exactly what one process would, and each kept sample once per epoch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sslterm.data.sampler import ShardedBatches, ShardedBatchSampler
from sslterm.data.streams import stream_seed
from sslterm.errors import UserError


def ranks(n: int, per_rank: int, world: int, seed: int = 0, drop_last: bool = True):
    return [ShardedBatches(n, per_rank, r, world, seed, drop_last) for r in range(world)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranks_together_see_each_kept_sample_once(world):
    n, per_rank = 103, 5
    shards = ranks(n, per_rank, world)
    steps = n // (per_rank * world)
    seen = torch.cat([b for s in shards for b in s.epoch(3)])
    assert all(len(s) == steps for s in shards)
    assert all(len(b) == per_rank and b.dtype == torch.int64 for s in shards for b in s.epoch(3))
    assert len(seen) == steps * per_rank * world == len(set(seen.tolist()))
    assert set(seen.tolist()) <= set(range(n))
    assert len(seen) > n - per_rank * world  # only the incomplete global batch is dropped


def test_two_ranks_see_the_one_rank_global_batches():
    one = ShardedBatches(50, 8, 0, 1, seed=11).epoch(2)
    two = [s.epoch(2) for s in ranks(50, 4, 2, seed=11)]
    assert len(one) == len(two[0]) == len(two[1]) == 6
    for step, batch in enumerate(one):
        assert torch.equal(batch, torch.cat([two[0][step], two[1][step]]))


def test_epochs_differ_and_repeat_exactly():
    a = ShardedBatches(64, 8, 1, 2, seed=5)
    b = ShardedBatches(64, 8, 1, 2, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.epoch(4), b.epoch(4), strict=True))
    assert not torch.equal(torch.cat(a.epoch(4)), torch.cat(a.epoch(5)))
    assert not torch.equal(
        torch.cat(a.epoch(4)), torch.cat(ShardedBatches(64, 8, 1, 2, 6).epoch(4))
    )


def test_keep_last_splits_the_short_batch_evenly():
    shards = ranks(23, 4, 2, drop_last=False)  # 2 full global batches of 8, then 7
    assert len(shards[0]) == 3
    last = [s.epoch(0)[-1] for s in shards]
    assert [len(b) for b in last] == [4, 3]
    seen = torch.cat([b for s in shards for b in s.epoch(0)]).tolist()
    assert sorted(seen) == list(range(23))


def test_a_dataset_smaller_than_one_global_batch_is_a_user_error():
    with pytest.raises(UserError, match="cannot fill one global batch of 64"):
        ShardedBatches(50, 32, 0, 2, seed=0)
    assert len(ShardedBatches(50, 32, 0, 2, seed=0, drop_last=False)) == 1
    with pytest.raises(ValueError):
        ShardedBatches(50, 4, 2, 2, seed=0)


class _Indexed(TensorDataset):
    """Items are the sampler's ``(index, seed)`` pairs."""

    def __getitem__(self, item):
        return super().__getitem__(item[0])


def test_batch_sampler_gives_the_same_batches_through_a_dataloader():
    data = _Indexed(torch.arange(40) * 10)
    reference = ShardedBatches(40, 4, 1, 2, seed=9)
    sampler = ShardedBatchSampler(reference, seed=9)
    loader = DataLoader(data, batch_sampler=sampler)
    assert len(loader) == len(reference) == 5
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        got = [batch for (batch,) in loader]
        want = [idx * 10 for idx in reference.epoch(epoch)]
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert not torch.equal(got[0], [idx * 10 for idx in reference.epoch(0)][0])


def test_batch_sampler_window_cuts_steps_for_a_cap_and_a_resume():
    reference = ShardedBatches(40, 4, 0, 2, seed=3)
    sampler = ShardedBatchSampler(reference, seed=3)
    sampler.set_epoch(2, start=1, stop=4)
    assert len(sampler) == 3
    want = [b.tolist() for b in reference.epoch(2)[1:4]]
    resumed = list(sampler)
    assert [[i for i, _ in batch] for batch in resumed] == want
    sampler.set_epoch(2)  # the whole epoch: a window's seeds are the whole epoch's
    assert list(sampler)[1:4] == resumed
    sampler.set_epoch(2, start=5)
    assert len(sampler) == 0 and list(sampler) == []


def test_every_image_of_every_rank_gets_its_own_stream():
    """Seeds differ across ranks, slots, micro-batches and epochs; the same names give the
    same seed (a shared seed per rank gave every rank the same crops)."""
    seeds = []
    for rank in (0, 1):
        sampler = ShardedBatchSampler(ShardedBatches(64, 4, rank, 2, seed=5), seed=5)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            seeds += [seed for batch in sampler for _, seed in batch]
    assert len(seeds) == 2 * 2 * 64 // 2 and len(set(seeds)) == len(seeds)
    again = ShardedBatchSampler(ShardedBatches(64, 4, 1, 2, seed=5), seed=5)
    again.set_epoch(1)
    assert [s for b in again for _, s in b] == seeds[-32:]
    other_run = ShardedBatchSampler(ShardedBatches(64, 4, 1, 2, seed=6), seed=6)
    other_run.set_epoch(1)
    assert not {s for b in other_run for _, s in b} & set(seeds)


def test_stream_seeds_are_deterministic_and_fit_a_torch_generator():
    assert stream_seed(0, 1, 2) == stream_seed(0, 1, 2) != stream_seed(0, 2, 1)
    grid = {stream_seed(s, r, e, m) for s in range(4) for r in range(8) for e in range(4)
            for m in range(16)}
    assert len(grid) == 4 * 8 * 4 * 16
    assert all(0 <= s < 2**63 for s in grid)
    torch.Generator().manual_seed(max(grid))
