import pytest

from sslterm.profile.load import validate_text
from sslterm.train.schedule import checkpoint_due, probe_due, val_due, warmup_note


def due(fn, epochs, *args):
    return [e for e in range(epochs) if fn(e, epochs, *args)]


@pytest.mark.parametrize(("epochs", "interval", "expected"), [
    (100, 50, [0, 50, 99]),      # the original: epochs 0, N, 2N, ... plus the end
    (101, 50, [0, 50, 100]),
    (3, 2, [0, 2]),
    (5, 0, [4]),                 # 0 turns the periodic probe off; the final one stays
    (1, 50, [0]),
])
def test_probe_epochs(epochs, interval, expected):
    assert due(probe_due, epochs, interval) == expected


def test_probe_disabled():
    assert due(probe_due, 10, 2, False) == []


def test_val_and_checkpoint_epochs():
    assert due(val_due, 12, 5) == [4, 9, 11]
    assert due(val_due, 12, 0) == []
    assert due(checkpoint_due, 12, 5) == [4, 9, 11]
    assert due(checkpoint_due, 12, 0) == [11]


def test_warmup_note_when_the_whole_run_is_warmup():
    """The default warmup (10 epochs) is shrunk to a shorter run: then the lr never decays,
    and the note says so with the value as written."""
    def note(*overrides: str) -> str | None:
        return warmup_note(validate_text("", "p.toml", overrides).train)

    assert note("train.epochs=4") == ("note: train.warmup_epochs (10) >= train.epochs (4): the "
                                      "whole run is warmup; the lr never decays")
    assert note("train.epochs=4", "train.warmup_epochs=4") == (
        "note: train.warmup_epochs (4) >= train.epochs (4): the whole run is warmup; the lr "
        "never decays")
    assert note("train.epochs=10") is not None  # warmup to the very last step
    assert note("train.epochs=11") is None
    assert note("train.epochs=4", "train.warmup_epochs=1.5") is None
