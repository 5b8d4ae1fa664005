"""When the callbacks run, as pure functions of the epoch (0-based, run after it ends)."""

from __future__ import annotations


def probe_due(epoch: int, epochs: int, interval: int, enabled: bool = True) -> bool:
    """Linear eval after epochs 0, N, 2N, ... and always after the last; N = 0: last only."""
    if not enabled:
        return False
    return epoch == epochs - 1 or (interval > 0 and epoch % interval == 0)


def val_due(epoch: int, epochs: int, interval: int) -> bool:
    """SSL validation after every N-th epoch (N, 2N, ...) and the last; N = 0: never."""
    return interval > 0 and ((epoch + 1) % interval == 0 or epoch == epochs - 1)


def checkpoint_due(epoch: int, epochs: int, interval: int) -> bool:
    """A checkpoint after every N-th epoch and always after the last; N = 0: last only."""
    return epoch == epochs - 1 or (interval > 0 and (epoch + 1) % interval == 0)
