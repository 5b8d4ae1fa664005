"""When the callbacks run, as pure functions of the epoch (0-based, run after it ends), and
what the lr schedule of a profile amounts to."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sslterm.profile.schema import TrainConfig


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


def warmup_note(train: TrainConfig) -> str | None:
    """One line for ``sslterm run`` and ``profile validate`` when the linear warmup lasts the
    whole run, so the cosine decay never starts (a short test run of a recipe, say). The
    unwritten default (10) is shrunk to ``train.epochs`` by the schema; the note names the
    value as written, which is the one the user knows."""
    if train.warmup_epochs < train.epochs:
        return None
    written = (train.warmup_epochs if "warmup_epochs" in train.model_fields_set
               else type(train).model_fields["warmup_epochs"].default)
    return (f"note: train.warmup_epochs ({written:g}) >= train.epochs ({train.epochs}): "
            "the whole run is warmup; the lr never decays")
