"""Random streams for augmentation: one per (run seed, rank, epoch, micro-batch[, slot]).

Every draw of an augmentation comes from a generator seeded by :func:`stream_seed` over the
names of what it augments, so

- every rank draws its own crops, flips and colours (a shared ``train.seed`` would give
  every rank the same ones, and an 8-GPU run one rank's worth of distinct views);
- the per-sample path gives each image of a batch its own stream, whichever DataLoader
  worker decodes it and however many workers there are;
- a resumed run continues the stream of the uninterrupted run: the stream of a step is a
  function of the step, and the step is in the checkpoint, so there is no generator state
  to save or to lose.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: neighbouring inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stream_seed(*keys: int) -> int:
    """A 63-bit seed (what ``torch.Generator.manual_seed`` takes) for the stream named by
    ``keys``, e.g. ``(seed, rank, epoch, micro_batch)``; deterministic across processes.
    torch's CPU generator keeps only the low 32 bits of a seed: splitmix's low bits are as
    well mixed as its high ones, so the streams stay unrelated there too."""
    h = 0
    for key in keys:
        h = _mix(h ^ (key & _MASK))
    return h >> 1
