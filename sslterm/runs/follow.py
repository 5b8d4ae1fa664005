"""Headless progress for ``sslterm run``: follow events.jsonl with a rich display.

The follower only reads the run directory, so it can be stopped and started
again at will (``sslterm follow RUN``) without touching the run.

Epoch numbers: the lines printed for events name the 0-based epoch of the log
(``epoch    2``, ``stopped after epoch 2``); counts say how many epochs are done
(``ep 3/30`` on the progress line, ``3 of 30 epochs done``), as the app's epoch
column and ``sslterm runs`` do. While epoch 3 runs, 3 are done: the two agree.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from sslterm.runs.events import EventReader
from sslterm.runs.launcher import kill_run, request_stop
from sslterm.runs.scheduler import run_state
from sslterm.runs.store import RunDir
from sslterm.runs.summary import EtaClock, epochs_done, plural, stopped_words


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_VAL_FIXED = {"v", "t", "epoch", "step", "loss", "knn_top1", "knn_top5"}


def describe(event: dict[str, Any], epochs: int | None = None,
             steps_per_epoch: int | None = None) -> str | None:
    """A one-line message for events worth printing above the bar. ``epochs`` and
    ``steps_per_epoch`` (the run's, where known) complete a ``run_stopped`` of a log written
    before that event named them."""
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
    if kind == "run_failed":  # input to fix is said once, by the run's final line
        return None if event.get("user") else f"[red]failed:[/] {event.get('error')}"
    if kind == "run_stopped":
        return f"{stopped(event, epochs, steps_per_epoch)}, checkpoint {event.get('checkpoint')}"
    if kind == "run_finished":
        return "finished"
    if kind == "run_resumed":
        return (f"resumed at step {event.get('step')} from "
                f"{event.get('checkpoint') or 'the start'}")
    return None


def stopped(event: dict[str, Any], epochs: int | None = None,
            steps_per_epoch: int | None = None) -> str:
    """A ``run_stopped`` event in words (:func:`sslterm.runs.summary.stopped_words`): its
    ``epoch`` is the number of epochs done, not one that ran."""
    done, step = int(event.get("epoch") or 0), event.get("step")
    mid = event.get("mid_epoch")
    if mid is None and isinstance(step, int) and steps_per_epoch:
        mid = step > done * steps_per_epoch
    return stopped_words(done, event.get("epochs") or epochs, step, mid)


# -- the progress line ----------------------------------------------------------------
BAR_MAX, BAR_MIN = 40, 10
"""Widths of the bar: at most (rich's default), and the least worth drawing."""


class EtaColumn(ProgressColumn):
    """``ETA h:mm:ss`` from the task's ``clock`` field (a callable: :meth:`Display.eta`), the
    estimate the app's runs table shows (:class:`EtaClock`); ``-:--:--`` until there is one."""

    def render(self, task: Task) -> Text:
        clock = task.fields.get("clock")
        left = clock() if callable(clock) else None
        shown = "-:--:--" if left is None else str(timedelta(seconds=int(left)))
        return Text(f"ETA {shown}", style="progress.remaining")


class ProgressLine(Progress):
    """The progress line, fitted to the terminal's width at every refresh (:data:`LEVELS`):
    the run id, the bar, the step count and the full stats where there is room; narrower,
    the run id goes first, then the step count, then the bar, and last the stats shorten to
    epoch and loss. The bar takes the room left. The times always show whole: rich would
    otherwise squeeze every column at 80 columns, down to ``0:... ETA 0:...``.

    Task fields: ``stats`` (full), ``short`` (epoch and loss) and ``clock`` (for
    :class:`EtaColumn`)."""

    def __init__(self, console: Console, disable: bool = False) -> None:
        self.screen = console  # Progress.console needs self.live, which is made after a render
        self.parts = {
            "id": TextColumn("[bold]{task.description}"),
            "steps": MofNCompleteColumn(),
            "stats": TextColumn("{task.fields[stats]}"),
            "short": TextColumn("{task.fields[short]}"),
            "elapsed": TimeElapsedColumn(),
            "eta": EtaColumn(),
        }
        super().__init__(*self.parts.values(), console=console, transient=False, disable=disable)

    LEVELS: tuple[tuple[str, ...], ...] = (
        ("id", "bar", "steps", "stats", "elapsed", "eta"),
        ("bar", "steps", "stats", "elapsed", "eta"),
        ("bar", "stats", "elapsed", "eta"),
        ("stats", "elapsed", "eta"),
        ("bar", "short", "elapsed", "eta"),
        ("short", "elapsed", "eta"),
        ("short", "eta"),
    )
    """Column sets from the richest to the leanest; the first that fits is drawn."""

    def fit(self, tasks: Sequence[Task], width: int) -> list[ProgressColumn]:
        """The richest :data:`LEVELS` entry whose columns fit ``width`` cells, the bar as
        wide as the room left (at most :data:`BAR_MAX`, at least :data:`BAR_MIN`)."""
        level: tuple[str, ...] = self.LEVELS[-1]
        bar = 0
        for names in self.LEVELS:
            used = len(names) - 1 + sum(
                max((self.parts[n](t).cell_len for t in tasks), default=0)
                for n in names if n != "bar")
            bar = min(BAR_MAX, width - used) if "bar" in names else 0
            if used <= width and ("bar" not in names or bar >= BAR_MIN):
                level = names
                break
        return [BarColumn(bar_width=bar) if n == "bar" else self.parts[n] for n in level]

    def add_run(self, run_id: str) -> TaskID:
        """The run's task, with every field the columns read (a live display draws it at once)."""
        return self.add_task(run_id, total=None, stats="starting", short="starting", clock=None)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        shown = [t for t in tasks if t.visible]
        columns = self.fit(shown, self.screen.width)
        table = Table.grid(*(c.get_table_column().copy() for c in columns), padding=(0, 1))
        for task in shown:
            table.add_row(*(c(task) for c in columns))
        return table


def follow(run: RunDir, console: Console | None = None, poll: float = 0.25, offset: int = 0) -> int:
    """Follow until the run ends. Ctrl-C asks for a graceful stop, a second one kills.
    ``offset``: where in the log to begin (a resume shows only what it appends).
    The end is the run's final status, never an event: a log holds the stop and
    failure records of earlier launches before a resume. Returns 0 for
    finished/stopped, 1 for failed, 2 for failed on input to fix (``user_error``)."""
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
    try:
        with ProgressLine(console, disable=not console.is_terminal) as progress:
            show = Display(console, progress, progress.add_run(run.id))
            show.history(_history(run, offset))
            while True:
                ended = run_state(run)  # before reading: all the log an ended run wrote
                for event in reader.read_new():
                    show(event)
                if not run.path.is_dir():
                    console.print(f"[red]run directory {run.path} is gone[/]")
                    return 1
                state, error = ended
                if state == "failed":  # input only the trainer could check: exit 2, as bad input
                    console.print(f"[red]run {run.id} failed:[/] {error}")
                    return 2 if run.read_status().get("user_error") else 1
                if state in ("finished", "stopped"):
                    console.print(f"run {run.id} {state}: {run.path}")
                    return 0
                time.sleep(poll)
    finally:
        signal.signal(signal.SIGINT, previous)


def _history(run: RunDir, offset: int) -> list[dict[str, Any]]:
    """The events before ``offset`` (a resume's earlier launches), which are not printed but
    tell the ETA what an epoch end costs."""
    if offset <= 0:
        return []
    try:
        with open(run.events, "rb") as fh:
            head = fh.read(offset)
    except OSError:
        return []
    out = []
    for line in head.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "kind" in event:
            out.append(event)
    return out


class Display:
    """Prints each event worth a line and moves the progress line."""

    def __init__(self, console: Console, progress: Progress, task: TaskID) -> None:
        self.console, self.progress, self.task = console, progress, task
        self.epochs = 1
        self.steps_per_epoch: int | None = None
        self.done = 0
        self.last: dict[str, Any] | None = None  # the last step event
        self.clock = EtaClock()
        self.progress.update(task, stats="starting", short="starting", clock=self.eta)

    def eta(self) -> float | None:
        """Seconds left (:class:`EtaClock`), as the app's runs table says."""
        spe = self.steps_per_epoch
        return self.clock.remaining(self.epochs * spe if spe else None, self.epochs)

    def history(self, events: Iterable[dict[str, Any]]) -> None:
        """Earlier launches' events: only what the ETA learns from them."""
        for event in events:
            if event.get("kind") == "run_started":
                self.clock.launch()
            elif event.get("kind") == "step":
                self._clock_step(event)

    def _stats(self) -> None:
        """The line's stats: epochs done, then the last step's loss, lr and speed."""
        last = self.last or {}
        head = f"ep {self.done}/{self.epochs} loss {_fmt(last.get('loss'), '.4f')}"
        self.progress.update(self.task, short=head, stats=(
            f"{head} lr {_fmt(last.get('lr'), '.3g')} {_fmt(last.get('ips'), ',.0f')} img/s"))

    def _clock_step(self, event: dict[str, Any]) -> None:
        t, step, epoch = event.get("t"), event.get("step"), event.get("epoch")
        if all(isinstance(v, (int, float)) for v in (t, step, epoch)):
            self.clock.step(float(t), float(step), float(epoch))

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        done = epochs_done(kind, event.get("epoch"))
        if kind == "run_resumed":
            self.done = done or 0
        elif done is not None:
            self.done = max(self.done, done)
        if kind == "run_started":
            self.clock.launch()
            self.steps_per_epoch = event.get("steps_per_epoch") or None
            self.epochs = event.get("epochs") or 1
            self.progress.update(self.task, total=self.epochs * (self.steps_per_epoch or 1),
                                 completed=event.get("start_step", 0))
            world = event.get("world_size")
            procs = plural(world, "process", "processes") if isinstance(world, int) else "? processes"
            self.console.print(
                f"started: {event.get('encoder')} on {event.get('dataset')}, "
                f"{procs} on {', '.join(event.get('devices') or [])}"
                + (" (resumed)" if event.get("resumed") else ""))
        elif kind in ("step", "run_resumed"):
            self.progress.update(self.task, completed=event.get("step") or 0)
        if kind == "step":
            self._clock_step(event)
            self.last = event
        if kind in ("step", "epoch", "run_resumed") and self.last is not None:
            self._stats()
        message = describe(event, self.epochs, self.steps_per_epoch)
        if message:
            self.console.print(message)
