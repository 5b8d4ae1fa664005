"""Per-rank batches cut from one global, seeded permutation per epoch.

Every rank computes the same permutation (seeded by ``seed + epoch``) and cuts it into
GLOBAL batches of ``per_rank_batch * world_size``; rank r takes the slice
``[r*b : (r+1)*b]`` of each. So N processes train on exactly the global batches one
process would see, which is what makes a multi-GPU NT-Xent loss equal the 1-GPU one,
and no sample is seen twice in an epoch.

``drop_last=True`` (training) drops the incomplete last global batch: every step then
has equal batches on all ranks, as an all-gather of equal shapes needs. With
``drop_last=False`` (evaluation) the last global batch is kept and split as evenly as
possible over the ranks (sizes differ by at most one; a rank may get an empty one).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from sslterm.data.streams import stream_seed
from sslterm.errors import UserError


class ShardedBatches:
    """Index tensors of one rank, per step, for the GPU-resident path (see the module doc)."""

    def __init__(
        self,
        n: int,
        per_rank_batch: int,
        rank: int,
        world_size: int,
        seed: int,
        drop_last: bool = True,
    ) -> None:
        if per_rank_batch < 1 or world_size < 1 or not 0 <= rank < world_size or n < 0:
            raise ValueError(
                f"bad sharding: n={n} per_rank_batch={per_rank_batch} rank={rank} "
                f"world_size={world_size}"
            )
        self.n, self.per_rank_batch = n, per_rank_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.drop_last = seed, drop_last
        self.global_batch = per_rank_batch * world_size
        if drop_last and n < self.global_batch:
            raise UserError(
                f"{n} images cannot fill one global batch of {self.global_batch} "
                f"({per_rank_batch} per process x {world_size}); lower train.batch_size"
            )

    def __len__(self) -> int:
        """Steps per epoch."""
        full, rest = divmod(self.n, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's global order, identical on every rank."""
        gen = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=gen)

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        """int64 index tensors for this rank, one per step of ``epoch``."""
        perm = self.permutation(epoch)[: len(self) * self.global_batch]
        return [
            batch.tensor_split(self.world_size)[self.rank]
            for batch in perm.split(self.global_batch)
        ]


class ShardedBatchSampler(Sampler[list[tuple[int, int]]]):
    """The batches of a ``ShardedBatches``, as a DataLoader ``batch_sampler``: each item is
    ``(index, seed)``, the seed of that image's augmentation stream
    (:func:`sslterm.data.streams.stream_seed` of the run's seed, the rank, the epoch, the
    micro-batch and the slot in it), so a worker draws the same views for it however
    the batches are spread over workers, and a resumed run draws what the whole run would.
    With ``seed=None`` the items are plain indices (a path that augments whole batches).

    Call ``set_epoch(e)`` before iterating each epoch (as with DistributedSampler),
    optionally with a ``[start, stop)`` window of steps (a step cap, a mid-epoch
    resume). The sampler lives in the main process, so this works with persistent
    workers too.
    """

    def __init__(self, batches: ShardedBatches, seed: int | None) -> None:
        self.batches, self.seed = batches, seed
        self.window = (0, 0, None)

    def set_epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        self.window = (epoch, start, stop)

    def __len__(self) -> int:
        _, start, stop = self.window
        return len(range(len(self.batches))[start:stop])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start, stop = self.window
        first = start or 0
        rank = self.batches.rank
        for micro, batch in enumerate(self.batches.epoch(epoch)[start:stop], first):
            if self.seed is None:
                yield batch.tolist()
                continue
            yield [(index, stream_seed(self.seed, rank, epoch, micro, slot))
                   for slot, index in enumerate(batch.tolist())]
