"""Headless progress for ``sslterm run``: follow events.jsonl with a rich display.

The follower only reads the run directory, so it can be stopped and started
again at will (``sslterm follow RUN``) without touching the run.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sslterm.runs.events import EventReader
from sslterm.runs.launcher import kill_run, request_stop
from sslterm.runs.scheduler import run_state
from sslterm.runs.store import RunDir


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_VAL_FIXED = {"v", "t", "epoch", "step", "loss", "knn_top1", "knn_top5"}


def describe(event: dict[str, Any]) -> str | None:
    """A one-line message for events worth printing above the bar."""
    kind = event["kind"]
    if kind == "epoch":
        extra = f"  online {_fmt(event.get('online_top1'), '.1f')}%" if "online_top1" in event else ""
        return (f"epoch {event['epoch']:>4}  loss {_fmt(event.get('loss'), '.4f')}  "
                f"lr {_fmt(event.get('lr'), '.4g')}  {_fmt(event.get('ips'), ',.0f')} img/s  "
                f"{_fmt(event.get('seconds'), '.1f')} s{extra}")
    if kind == "val":  # the method's own metrics, whatever they are, then kNN
        own = "".join(f"  {key} {_fmt(value, '.4g')}" for key, value in event.items()
                      if key not in _VAL_FIXED and isinstance(value, (int, float))
                      and not isinstance(value, bool))
        knn = f"  kNN {_fmt(event.get('knn_top1'), '.2f')}%" if "knn_top1" in event else ""
        return f"val   {event['epoch']:>4}  loss {_fmt(event.get('loss'), '.4f')}{own}{knn}"
    if kind == "probe":
        return (f"probe {event['epoch']:>4}  linear eval  train {_fmt(event.get('train_top1'), '.2f')}%"
                f"  val {_fmt(event.get('val_top1'), '.2f')}%  test {_fmt(event.get('test_top1'), '.2f')}%")
    if kind == "checkpoint":
        return f"checkpoint {event['path']}"
    if kind == "log":
        return event.get("message")
    if kind == "run_failed":
        return f"[red]failed:[/] {event.get('error')}"
    if kind == "run_stopped":
        return f"stopped at epoch {event.get('epoch')}, checkpoint {event.get('checkpoint')}"
    if kind == "run_finished":
        return "finished"
    if kind == "run_resumed":
        return (f"resumed at step {event.get('step')} from "
                f"{event.get('checkpoint') or 'the start'}")
    return None


def follow(run: RunDir, console: Console | None = None, poll: float = 0.25, offset: int = 0) -> int:
    """Follow until the run ends. Ctrl-C asks for a graceful stop, a second one kills.
    ``offset``: where in the log to begin (a resume shows only what it appends).
    The end is the run's final status, never an event: a log holds the stop and
    failure records of earlier launches before a resume. Returns 0 for
    finished/stopped, 1 for failed."""
    if console is None:  # piped (a log file, a scheduler): whole lines, no cut, no bar
        console = Console()
        console.soft_wrap = not console.is_terminal
    reader = EventReader(run.events, offset=offset)
    interrupts = 0

    def on_sigint(*_: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        try:
            if interrupts == 1:
                console.print("[yellow]stopping: checkpoint, then exit (Ctrl-C again to kill)[/]")
                request_stop(run)
            else:
                console.print("[red]killing the run[/]")
                kill_run(run)
        except Exception as exc:  # the run may have ended in between
            console.print(f"[dim]{exc}[/]")

    previous = signal.signal(signal.SIGINT, on_sigint)
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False,
                      disable=not console.is_terminal) as progress:
            show = Display(console, progress, progress.add_task(run.id, total=None, stats="starting"))
            while True:
                ended = run_state(run)  # before reading: all the log an ended run wrote
                for event in reader.read_new():
                    show(event)
                if not run.path.is_dir():
                    console.print(f"[red]run directory {run.path} is gone[/]")
                    return 1
                state, error = ended
                if state == "failed":
                    console.print(f"[red]run {run.id} failed:[/] {error}")
                    return 1
                if state in ("finished", "stopped"):
                    console.print(f"run {run.id} {state}: {run.path}")
                    return 0
                time.sleep(poll)
    finally:
        signal.signal(signal.SIGINT, previous)


class Display:
    """Prints each event worth a line and moves the progress bar."""

    def __init__(self, console: Console, progress: Progress, task: TaskID) -> None:
        self.console, self.progress, self.task = console, progress, task
        self.epochs = 1

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "run_started":
            steps_per_epoch = max(1, event.get("steps_per_epoch") or 1)
            self.epochs = event.get("epochs") or 1
            self.progress.update(self.task, total=self.epochs * steps_per_epoch,
                                 completed=event.get("start_step", 0))
            self.console.print(
                f"started: {event.get('encoder')} on {event.get('dataset')}, "
                f"{event.get('world_size')} process(es) on {', '.join(event.get('devices') or [])}"
                + (" (resumed)" if event.get("resumed") else ""))
        elif kind in ("step", "run_resumed"):
            self.progress.update(self.task, completed=event.get("step") or 0)
        if kind == "step":
            self.progress.update(self.task, stats=(
                f"ep {event['epoch'] + 1}/{self.epochs} loss {_fmt(event.get('loss'), '.4f')} "
                f"lr {_fmt(event.get('lr'), '.3g')} {_fmt(event.get('ips'), ',.0f')} img/s"))
        message = describe(event)
        if message:
            self.console.print(message)
