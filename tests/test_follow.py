"""The headless follower of ``sslterm run``: its progress line at any terminal width, the
lines it prints for events, and epoch counts and ETA that agree with the app's runs table."""

from __future__ import annotations

import re
import time

import pytest
from rich.console import Console

from sslterm.runs.follow import Display, ProgressLine, describe

SWEEP_ID = "cifar10-base_lr0.1-batch_size64-20260101-120000"  # a sweep's 46-column id
TIMES = re.compile(r"\d+:\d\d:\d\d ETA \d+:\d\d:\d\d$")


def line_display(width: int, run_id: str = SWEEP_ID) -> tuple[Console, ProgressLine, Display]:
    console = Console(width=width, record=True, force_terminal=True)
    progress = ProgressLine(console)
    progress.start()  # live, as in follow(): a task is drawn as soon as it is added
    task = progress.add_run(run_id)
    progress.stop()  # the lines below are drawn by hand, at known moments
    return console, progress, Display(console, progress, task)


def started(t: float = 1000.0, **fields) -> dict:
    return {"kind": "run_started", "t": t, "epochs": 25, "steps_per_epoch": 300,
            "encoder": "resnet18", "dataset": "cifar10", "world_size": 1, "devices": ["cpu"],
            **fields}


def step(t: float, n: int, spe: int = 300) -> dict:
    return {"kind": "step", "t": t, "epoch": (n - 1) // spe, "step": n, "loss": 4.1234,
            "lr": 0.0375, "ips": 12345.0}


def drawn(console: Console, progress: ProgressLine) -> str:
    """The progress line as the terminal shows it."""
    console.print(progress.make_tasks_table(progress.tasks))
    return console.export_text().splitlines()[-1]


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
def test_the_progress_line_fits_the_width_with_whole_times(width):
    """Before: at 80 columns rich squeezed every column and the line ended in
    ``0:... ETA 0:...``."""
    console, progress, show = line_display(width)
    t0 = time.time() - 700  # a step a second until now: about 1:53:00 left
    show(started(t0))
    for n in range(1, 700, 10):
        show(step(t0 + n, n))
    line = drawn(console, progress)
    assert len(line) <= width, line
    assert "…" not in line and "..." not in line, line
    assert TIMES.search(line.rstrip()), line
    assert "ETA 1:5" in line  # the run's own estimate, 6,800 steps at 1 s
    assert "ep 2/25 loss 4.1234" in line  # epochs 0 and 1 done, 2 under way
    if width >= 200:
        assert SWEEP_ID in line and "12,345 img/s" in line
    if width >= 80:
        assert "lr 0.0375" in line


def test_the_epoch_count_on_the_line_is_epochs_done_across_a_resume():
    """As the app's epoch column: 11 done while epoch 11 runs, the same at the resume that
    continues it, 12 once it has ended."""
    console, progress, show = line_display(120)
    counts = []

    def count() -> str:
        return re.search(r"ep (\d+)/25", drawn(console, progress)).group(1)

    show(started(steps_per_epoch=10))
    show(step(1000.0, 115, spe=10))
    counts.append(count())
    show({"kind": "run_resumed", "t": 1100.0, "epoch": 11, "step": 110,
          "checkpoint": "checkpoints/c"})
    show(started(1101.0, steps_per_epoch=10, resumed=True, start_step=110, start_epoch=11))
    show(step(1110.0, 111, spe=10))
    counts.append(count())
    show({"kind": "epoch", "t": 1120.0, "epoch": 11, "step": 120, "loss": 1.0})
    counts.append(count())
    assert counts == ["11", "11", "12"]


def test_the_eta_after_a_resume_counts_the_epoch_ends_the_run_has_paid():
    """The follower of a resume prints only the new launch, but reads the earlier ones
    for what an epoch end costs: 18 steps at 1 s and two ends at 10 s, not 18 s."""
    _, _, show = line_display(120)
    history = [started(1000.0, epochs=5, steps_per_epoch=10)]
    for n in range(1, 33):
        history.append(step(1000.0 + n + 10 * ((n - 1) // 10), n, spe=10))  # 10 s at each end
    show.history(history)
    show({"kind": "run_resumed", "t": 1100.0, "epoch": 3, "step": 30, "checkpoint": "c"})
    show(started(1101.0, epochs=5, steps_per_epoch=10, resumed=True, start_step=30))
    show(step(2_000_000_000.0, 31, spe=10))
    show(step(2_000_000_001.0, 32, spe=10))
    left = show.clock.remaining(50, 5, now=2_000_000_001.0)
    assert left == pytest.approx(18 + 2 * 10.0)


@pytest.mark.parametrize(("event", "words"), [
    ({"epoch": 3, "step": 90, "epochs": 30, "mid_epoch": False},
     "stopped after epoch 2 (3 of 30 epochs done), checkpoint checkpoints/c"),
    ({"epoch": 3, "step": 95, "epochs": 30, "mid_epoch": True},
     "stopped in epoch 3 at step 95 (3 of 30 epochs done), checkpoint checkpoints/c"),
    ({"epoch": 3, "step": 90}, "stopped after epoch 2 (3 of 30 epochs done), checkpoint "
                               "checkpoints/c"),  # a log from before the event said more
    ({"epoch": 3, "step": 91}, "stopped in epoch 3 at step 91 (3 of 30 epochs done), "
                               "checkpoint checkpoints/c"),
])
def test_a_stop_names_the_last_epoch_that_ran(event, words):
    """Before: "stopped at epoch 3" after epochs 0-2 ran (the event's epoch is the number
    done, where a resume continues)."""
    stop = {"kind": "run_stopped", "t": 1.0, "checkpoint": "checkpoints/c", **event}
    assert describe(stop, epochs=30, steps_per_epoch=30) == words


def test_the_start_line_counts_processes_in_words():
    console, _, show = line_display(120)
    show(started())
    show(started(world_size=4, devices=["H100"] * 4))
    text = console.export_text()
    assert "1 process on cpu" in text and "4 processes on H100" in text
    assert "(es)" not in text
