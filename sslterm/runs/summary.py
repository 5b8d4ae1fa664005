"""Per-run summaries and metric series for watchers (the TUI, benchmarks, scripts).

UI-free and torch-free. A :class:`RunSummary` follows one run directory: each
:meth:`RunSummary.update` reads only the bytes appended to ``events.jsonl``
since the previous call (through :class:`~sslterm.runs.events.EventReader`) and
re-reads ``status.json`` only when it changed, or while the run claims to be
alive (so a killed run turns ``failed`` at once). A :class:`RunIndex` keeps one
summary per run directory under an output folder.

Opening a very long log. ``json.loads`` costs ~3-15 us a line, so parsing a
1,000,000-event log would take seconds. When more than ``SAMPLE_BYTES`` are
unread at open, the summary reads the file through ``mmap`` instead: every
event that is *not* a ``step`` (found by one regex pass) and every event in the
last ``TAIL_BYTES`` are parsed; older ``step`` events are parsed at an even
stride, about ``HISTORY_POINTS`` of them, each standing for the steps around it
(the EMA uses that weight). Step events are already a sample of training (one
every ``log_every`` steps) and charts are drawn at screen width, so nothing
visible is lost. Events appended later are read in full.

Series keep every point they were given up to ``MAX_POINTS``; beyond that the
older points are thinned with the same min/max bucketing used for drawing, so
spikes survive days of following a run.
"""

from __future__ import annotations

import bisect
import json
import math
import mmap
import os
import re
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslterm.runs.events import EventReader
from sslterm.runs.meta import read_meta
from sslterm.runs.store import ACTIVE, RunDir, iter_runs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import numpy as np

X_AXES = ("step", "epoch", "time")
"""Chart x-axes: optimizer step, fractional epoch, wall seconds since the run started."""

METRICS: dict[str, str] = {
    "loss": "train loss",
    "val_loss": "SSL val loss",
    "lr": "learning rate",
    "ips": "images/s",
    "knn": "kNN top-1 %",
    "linear": "linear top-1 %",
}
"""Metric series every summary keeps, with their display names. Every other numeric
key of a ``step``, ``epoch``, ``val`` or ``probe`` event becomes a series too (methods
log their own scalars): see :func:`series_name`."""
SERIES_SKIP = frozenset({"v", "t", "epoch", "step"})
"""Event keys that are positions, not metrics."""
ETA_WINDOW = 200
"""Step events of the current launch the ETA's training speed is measured over."""
ETA_ENDS = 20
"""Epoch ends (evaluations, checkpoints) whose mean cost the ETA adds for each one to come."""

SAMPLE_BYTES = 2 << 20
TAIL_BYTES = 256 << 10
HISTORY_POINTS = 8000
MAX_POINTS = 200_000
DEFAULT_SMOOTHING = 0.9
SMOOTHING_STEPS = (0.0, 0.6, DEFAULT_SMOOTHING, 0.99)
"""EMA weights the app cycles through (0 = raw values)."""
NOISY = frozenset({"loss", "ips"})
"""Per-step series that EMA smoothing applies to; the others are schedules (lr) or
sparse evaluations (val loss, kNN, linear) that smoothing would bend."""
NOTES_MAX = 2000
"""Non-step events a summary keeps for the log pane."""
TERMINAL = ("run_finished", "run_stopped", "run_failed")

_NON_STEP = re.compile(rb'"kind"\s*:\s*"(?!step")')


# -- pure functions ---------------------------------------------------------------------
def ema(
    values: Sequence[float | None],
    weight: float = DEFAULT_SMOOTHING,
    counts: Sequence[float] | None = None,
    start: float = math.nan,
) -> list[float]:
    """Exponential moving average; ``counts[i]`` says how many raw points value i
    stands for (a sampled history), so smoothing is the same however it was read.
    Missing or non-finite values keep the previous average (NaN before the first);
    ``start`` continues an average computed before ``values``."""
    out: list[float] = []
    avg = start
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v):
            if math.isnan(avg):
                avg = float(v)
            else:
                w = weight if counts is None else weight ** counts[i]
                avg = w * avg + (1.0 - w) * v
        out.append(avg)
    return out


def minmax_indices(xs: Sequence[float], ys: Sequence[float], width: int) -> np.ndarray:
    """Indices of the points to keep so a line ``width`` cells wide looks the same:
    the lowest and highest finite point of each of ``width`` equal x-ranges, plus
    the first and last point. Needs ``xs`` ascending (series are)."""
    import numpy as np

    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    keep = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if width < 1 or len(keep) <= 2 * width:
        return keep
    x, y = x[keep], y[keep]
    edges = np.linspace(x[0], x[-1], width + 1)[:-1]
    starts = np.unique(np.searchsorted(x, edges, side="left"))
    starts = starts[starts < len(x)]
    lengths = np.diff(np.append(starts, len(x)))
    bucket = np.repeat(np.arange(len(starts)), lengths)
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    first_lo = np.flatnonzero(y == lo[bucket])
    first_hi = np.flatnonzero(y == hi[bucket])
    _, i_lo = np.unique(bucket[first_lo], return_index=True)
    _, i_hi = np.unique(bucket[first_hi], return_index=True)
    picked = np.concatenate(([0, len(x) - 1], first_lo[i_lo], first_hi[i_hi]))
    return keep[np.unique(picked)]


def downsample(
    xs: Sequence[float], ys: Sequence[float], width: int
) -> tuple[list[float], list[float]]:
    """At most ``2 * width + 2`` points that draw like the full series (min/max
    bucketing keeps spikes, which averaging or striding would hide)."""
    import numpy as np

    idx = minmax_indices(xs, ys, width)
    return (
        np.asarray(xs, dtype=float)[idx].tolist(),
        np.asarray(ys, dtype=float)[idx].tolist(),
    )


def parse_time(value: Any) -> float | None:
    """Unix seconds from status.json's ISO-8601 times (None when missing or bad)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def series_name(kind: str, key: str, protocol: str = "linear") -> str:
    """The series an event's numeric field feeds: ``step`` fields by their key
    (``loss``, ``momentum``), ``epoch`` and ``val`` fields prefixed by the kind
    (``val_top1``, ``epoch_online_top1``), ``probe`` fields by the protocol
    (``linear_train_top1``); ``val``'s ``knn_top1`` is ``knn``."""
    if kind == "step":
        return key
    if kind == "val" and key == "knn_top1":
        return "knn"
    return f"{protocol if kind == 'probe' else kind}_{key}"


def metric_title(name: str) -> str:
    """A series' display name: the fixed ones by :data:`METRICS`, the others by name."""
    return METRICS.get(name, name)


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# -- series -----------------------------------------------------------------------------
class Series:
    """One metric against step, epoch and wall time, with its EMA kept alongside."""

    __slots__ = ("step", "epoch", "time", "value", "smooth", "weight", "version", "_avg", "_other")

    def __init__(self, weight: float = DEFAULT_SMOOTHING) -> None:
        self.weight = weight
        self.step = array("d")
        self.epoch = array("d")
        self.time = array("d")
        self.value = array("d")
        self.smooth = array("d")
        self.version = 0
        self._avg = math.nan
        self._other: tuple[float, array] | None = None

    def __len__(self) -> int:
        return len(self.value)

    def append(
        self, step: float, epoch: float, t: float, value: float | None, count: float = 1
    ) -> None:
        v = math.nan if value is None else float(value)
        if math.isfinite(v):
            if math.isnan(self._avg):
                self._avg = v
            else:
                w = self.weight**count
                self._avg = w * self._avg + (1.0 - w) * v
        self.step.append(step)
        self.epoch.append(epoch)
        self.time.append(t)
        self.value.append(v)
        self.smooth.append(self._avg)
        self.version += 1
        if len(self.value) > MAX_POINTS:
            self._thin()

    def truncate_after(self, step: float) -> None:
        """Forget points after ``step`` (a resume redoes that work); the EMA goes on from
        the last point kept."""
        keep = len(self.step)
        while keep and self.step[keep - 1] > step:
            keep -= 1
        if keep == len(self.step):
            return
        for name in ("step", "epoch", "time", "value", "smooth"):
            del getattr(self, name)[keep:]
        self._avg = self.smooth[-1] if keep else math.nan
        self._other = None
        self.version += 1

    def x(self, axis: str) -> array:
        return {"step": self.step, "epoch": self.epoch, "time": self.time}[axis]

    def smoothed(self, weight: float) -> array:
        """The EMA with ``weight``: the one kept on append, or another one extended from
        where it was last read (so following a run stays cheap). The other weights count
        each stored point once, also where a point stands for a sampled stretch."""
        if weight == self.weight:
            return self.smooth
        if self._other is None or self._other[0] != weight:
            self._other = (weight, array("d"))
        out = self._other[1]
        out.extend(ema(self.value[len(out) :], weight, start=out[-1] if out else math.nan))
        return out

    def points(
        self, axis: str = "step", smoothing: float = 0.0, width: int = 0, lo: float = -math.inf
    ) -> tuple[list[float], list[float]]:
        """The series to draw, EMA-smoothed with weight ``smoothing`` (0 = raw values),
        from x = ``lo`` on (a zoom), downsampled to ``width`` cells (0 = every point)."""
        ys = self.smoothed(smoothing) if smoothing else self.value
        xs = self.x(axis)
        if lo > -math.inf:
            start = bisect.bisect_left(xs, lo)
            xs, ys = xs[start:], ys[start:]
        if not width:
            pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        return downsample(xs, ys, width)

    def value_at(self, axis: str, x: float, smoothing: float = 0.0) -> float | None:
        """The last finite value at or before ``x`` (what a chart cursor reads); None
        before the first point."""
        ys = self.smoothed(smoothing) if smoothing else self.value
        i = bisect.bisect_right(self.x(axis), x)
        while i > 0 and not math.isfinite(ys[i - 1]):
            i -= 1
        return ys[i - 1] if i else None

    def _thin(self) -> None:
        """Halve the older three quarters by min/max bucketing; the newest quarter stays whole."""
        import numpy as np

        n = len(self.value)
        cut = n * 3 // 4
        idx = minmax_indices(self.step[:cut], self.value[:cut], cut // 4)
        idx = np.unique(
            np.concatenate((idx, np.flatnonzero(~np.isfinite(np.asarray(self.value[:cut])))))
        )
        for name in ("step", "epoch", "time", "value", "smooth"):
            old = getattr(self, name)
            kept = np.asarray(old[:cut])[idx]
            setattr(self, name, array("d", kept.tolist()) + old[cut:])
        self._other = None


# -- time left ---------------------------------------------------------------------------
class EtaClock:
    """The time a live run still needs, from its step events: the steps left at the current
    launch's training speed (its last :data:`ETA_WINDOW` step events, within epochs) plus,
    for each epoch end to come, the mean cost of the last :data:`ETA_ENDS` epoch ends seen
    in the run, earlier launches included (validation, linear eval and checkpoints happen
    there). A launch's first steps alone, right after a start or a resume, would promise the
    run without its evaluations. The runs table and ``sslterm run``'s line both use it."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=ETA_WINDOW)
        """(t, step, 0-based epoch) of this launch's step events."""
        self.ends: deque[tuple[float, float]] = deque(maxlen=ETA_ENDS)
        """(seconds, steps) between the step events on either side of an epoch end."""

    def launch(self) -> None:
        """A new launch (``run_started``): its speed is measured afresh; the cost of epoch
        ends is the run's, and stays."""
        self.recent.clear()

    def step(self, t: float, step: float, epoch: float) -> None:
        """A ``step`` event; one in a later epoch than the one before brackets an epoch end."""
        if self.recent:
            ta, sa, ea = self.recent[-1]
            if epoch > ea and step > sa and t >= ta:
                self.ends.append((t - ta, step - sa))
        self.recent.append((t, step, epoch))

    def remaining(
        self, total: int | None, epochs: int | None, now: float | None = None
    ) -> float | None:
        """Seconds until the run's last step and epoch end, counting down from the last step
        event to ``now``; None before this launch logged two steps."""
        if total is None or len(self.recent) < 2:
            return None
        recent = list(self.recent)
        t1, s1, e1 = recent[-1]
        pairs = zip(recent[:-1], recent[1:], strict=True)
        in_epoch = [(tb - ta, sb - sa) for (ta, sa, ea), (tb, sb, eb) in pairs
                    if eb == ea and sb > sa]
        if in_epoch:
            step_time = sum(d[0] for d in in_epoch) / sum(d[1] for d in in_epoch)
            end_cost = (sum(max(0.0, dt - ds * step_time) for dt, ds in self.ends)
                        / len(self.ends)) if self.ends else 0.0
            ends_left = max(0, (epochs or 0) - int(e1))
        else:  # one step event an epoch (log_every >= steps_per_epoch): the rate holds the ends
            t0, s0, _ = recent[0]
            if s1 <= s0 or t1 <= t0:
                return None
            step_time, end_cost, ends_left = (t1 - t0) / (s1 - s0), 0.0, 0
        left = max(0.0, total - s1) * step_time + ends_left * end_cost
        return max(0.0, left - max(0.0, (now or time.time()) - t1))


# -- one run ----------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What a watcher shows about one run; call :meth:`update` on every tick."""

    run: RunDir
    state: str = "queued"
    error: str = ""
    traceback: str = ""
    profile: str = ""
    dataset: str = ""
    encoder: str = ""
    method: str = ""
    """The SSL method (``run_started``, else the frozen profile; legacy profiles: simclr)."""
    devices: list[str] = field(default_factory=list)
    world_size: int | None = None
    pgid: int | None = None
    """The live run's process group (its trainer processes are in it), from status.json."""
    epoch: int | None = None
    """Epochs completed (``3`` of 30: epochs 0-2 are done, 3 may be under way), the same
    number while a run lives, after it ended and across a resume, which continues from a
    checkpoint with this many epochs done. None before anything was logged."""
    epochs: int | None = None
    steps_per_epoch: int | None = None
    step: int | None = None
    last_loss: float | None = None
    lr: float | None = None
    ips: float | None = None
    knn: float | None = None
    linear: float | None = None
    linear_split: str = ""
    """Which split ``linear`` is on: "test" where the run has one, else "val"."""
    label: str = ""
    tags: tuple[str, ...] = ()
    note: str = ""
    """The run's label, tags and note (``meta.json``, :mod:`sslterm.runs.meta`)."""
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    last_event: float | None = None
    resumed: bool = False
    events: int = 0
    version: int = 0
    trained: float = 0.0
    """Seconds of training in finished segments: each launch (the first, every resume) from
    its start, which the supervisor records, to its last event; stopped time does not count."""
    notes: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=NOTES_MAX))
    """The latest non-step events, for a log pane (:func:`sslterm.runs.follow.describe`)."""
    noted: int = 0
    """How many notes were ever added; with ``generation``, what a pane has not shown yet."""
    generation: int = 0
    """Bumped when the log was replaced and the summary started over."""
    series: dict[str, Series] = field(default_factory=lambda: {k: Series() for k in METRICS})
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    """Held while updating; hold it to read series from another thread."""
    _reader: EventReader | None = field(default=None, repr=False)
    _status_sig: tuple[int, int] | None = field(default=None, repr=False)
    _meta_sig: tuple[int, int] | None = field(default=None, repr=False)
    _t0: float | None = field(default=None, repr=False)
    _segment: float | None = field(default=None, repr=False)
    _worked: float | None = field(default=None, repr=False)  # the last event of a launch
    _clock: EtaClock = field(default_factory=EtaClock, repr=False)

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def alive(self) -> bool:
        return self.state in ACTIVE

    def duration(self, now: float | None = None) -> float | None:
        """Seconds of training over every start and resume (to now while the run lives);
        from status.json's start and end while the log has no ``run_started``."""
        if self._segment is None and not self.trained:
            if self.started is None:
                return None
            end = self.ended
            if end is None:
                end = (now or time.time()) if self.alive else self.last_event
            return None if end is None else max(0.0, end - self.started)
        if self._segment is None:
            return self.trained
        end = (now or time.time()) if self.alive else self.last_event
        return self.trained + max(0.0, (end or self._segment) - self._segment)

    @property
    def total_steps(self) -> int | None:
        return self.epochs * self.steps_per_epoch if self.epochs and self.steps_per_epoch else None

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until a live run ends (:meth:`EtaClock.remaining`); None for ended runs."""
        if not self.alive:
            return None
        return self._clock.remaining(self.total_steps, self.epochs, now)

    def update(self, events: bool = True) -> bool:
        """Read what changed since the last call (``events=False``: status only, which is
        cheap); True when anything did."""
        with self.lock:
            changed = self._update_status()
            changed = self._update_meta() or changed
            if events:
                changed = self._update_events() or changed
            if changed:
                self.version += 1
            return changed

    # -- status -------------------------------------------------------------------------
    def _update_status(self) -> bool:
        try:
            st = os.stat(self.run.status_file)
        except FileNotFoundError:
            return False
        sig = (st.st_mtime_ns, st.st_size)
        if sig == self._status_sig and not self.alive:
            return False
        self._status_sig = sig
        status = self.run.read_status()
        state, error = self.run.state()
        before = (self.state, self.error, self.started, self.ended, self.profile)
        self.state, self.error = state, error or self.error
        self.profile = status.get("profile") or self.profile or self.run.id
        self.created = parse_time(status.get("created")) or self.created
        self.started = parse_time(status.get("started")) or self.started
        self.ended = parse_time(status.get("ended")) if state not in ACTIVE else None
        pgid = status.get("pgid")
        self.pgid = pgid if state in ACTIVE and isinstance(pgid, int) else None
        return before != (self.state, self.error, self.started, self.ended, self.profile)

    def _update_meta(self) -> bool:
        try:
            st = os.stat(self.run.meta_file)
            sig: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        if sig == self._meta_sig:
            return False
        self._meta_sig = sig
        meta = read_meta(self.run)
        before = (self.label, self.tags, self.note)
        self.label, self.tags, self.note = meta.label, meta.tags, meta.note
        return before != (self.label, self.tags, self.note)

    @property
    def name(self) -> str:
        """What legends and tables call the run: its label, else its id."""
        return self.label or self.id

    # -- events -------------------------------------------------------------------------
    def _update_events(self) -> bool:
        path = self.run.events
        if self._reader is None:
            self._reader = EventReader(path)
            self.method = self.method or profile_method(self.run.profile)
        reader = self._reader
        if not reader.has_new():
            return False
        restarts = reader.restarts
        if reader.offset == 0 and _size(path) > SAMPLE_BYTES:
            events = self._open_sampled(path)
        else:
            events = [(e, 1.0) for e in reader.read_new()]
        if reader.restarts != restarts:
            self._reset()
            return self._update_events() or True
        for event, count in events:
            self._apply(event, count)
        return bool(events)

    def _reset(self) -> None:
        """The log was replaced (a resume rewrote it): forget what was read from it."""
        reader = EventReader(self.run.events)
        fresh = RunSummary(self.run)
        keep = {"run", "state", "error", "profile", "created", "started", "ended", "version"}
        keep |= {"lock", "_status_sig", "label", "tags", "note", "_meta_sig"}
        generation = self.generation + 1
        for name in self.__dataclass_fields__:
            if name not in keep:
                setattr(self, name, getattr(fresh, name))
        self._reader, self.generation = reader, generation

    def _open_sampled(self, path: Path) -> list[tuple[dict[str, Any], float]]:
        """Read a long log quickly: all non-step events, the tail in full, and older
        step events at a stride (see the module docstring)."""
        reader = self._reader
        assert reader is not None
        with open(path, "rb") as fh:
            ino = os.fstat(fh.fileno()).st_ino
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                end = mm.rfind(b"\n") + 1
                tail = max(0, end - TAIL_BYTES)
                tail = mm.rfind(b"\n", 0, tail) + 1 if tail else 0
                lines: dict[int, float] = {}
                for m in _NON_STEP.finditer(mm, 0, tail):
                    lines[mm.rfind(b"\n", 0, m.start()) + 1] = 1.0
                head = mm[: min(tail, 1 << 20)]
                n_lines = max(1, int(tail * head.count(b"\n") / max(1, len(head))))
                stride = max(1, n_lines // HISTORY_POINTS)
                n_samples = max(1, n_lines // stride)
                for i in range(n_samples):
                    pos = int(i * tail / n_samples)
                    start = mm.rfind(b"\n", 0, pos) + 1 if pos else 0
                    lines.setdefault(start, float(stride))
                out: list[tuple[dict[str, Any], float]] = []
                for start in sorted(lines):
                    stop = mm.find(b"\n", start, tail)
                    if stop < 0:
                        continue
                    event = _loads(mm[start:stop])
                    if event is None:
                        continue
                    out.append((event, lines[start]))
        reader.skip_to(tail, ino)
        out.extend((e, 1.0) for e in reader.read_new())
        return out

    def _apply(self, e: dict[str, Any], count: float = 1.0) -> None:
        kind = e.get("kind")
        t = _finite(e.get("t"))
        self.events += 1
        if kind != "step":
            self.notes.append(e)
            self.noted += 1
        if kind == "run_started":
            self._close_segment(self._worked)  # a start without an end: killed
            self._segment = launch_start(e, t, self._worked)
            self._clock.launch()
        if t is not None:
            self.last_event = t
            if kind != "run_resumed":  # written by the next launch, before its run_started
                self._worked = t
            if self._t0 is None:
                self._t0 = t
        if kind in TERMINAL:
            self._close_segment(t)
        if kind == "run_resumed":
            self._resume_from(e)
            return
        if kind == "run_started":
            self.epochs = e.get("epochs") or self.epochs
            self.steps_per_epoch = e.get("steps_per_epoch") or self.steps_per_epoch
            self.profile = self.profile or e.get("profile") or ""
            self.dataset = e.get("dataset") or self.dataset
            self.encoder = e.get("encoder") or self.encoder
            self.method = str(e.get("method") or self.method)
            self.devices = list(e.get("devices") or self.devices)
            self.world_size = e.get("world_size") or self.world_size
            self.resumed = bool(e.get("resumed")) or self.resumed
            if self.started is None:
                self.started = t
            return
        step = _finite(e.get("step"))
        epoch = _finite(e.get("epoch"))
        if step is not None:
            self.step = int(step)
        done = epochs_done(kind, epoch)
        if done is not None:
            self.epoch = max(self.epoch or 0, done)
        xe = epoch or 0.0
        if step is not None and self.steps_per_epoch:
            xe = step / self.steps_per_epoch
        xs = step if step is not None else 0.0
        xt = (t - self._t0) if (t is not None and self._t0 is not None) else 0.0
        if kind == "step" and step is not None and t is not None and count == 1:
            self._clock.step(t, step, epoch or 0.0)
        for name, value in _metrics(kind, e):
            v = _finite(value)
            if v is None:
                continue
            if name not in self.series:
                self.series[name] = Series()
            self.series[name].append(xs, xe, xt, v, count)
            if name == "loss":
                self.last_loss = v
            elif name in ("lr", "ips", "knn", "linear"):
                setattr(self, name, v)
        if kind == "run_finished" and isinstance(e.get("results"), dict):
            self.method = str((e["results"].get("final") or {}).get("method") or self.method)
        if kind == "probe" and _linear(e)[0] is not None:
            self.linear_split = _linear(e)[1]
        if kind == "epoch" and _finite(e.get("ips")) is not None:
            self.ips = _finite(e.get("ips"))
        if kind == "run_failed":
            self.error = str(e.get("error") or self.error)
            self.traceback = str(e.get("traceback") or "")
        elif kind == "run_finished":
            final = final_accuracies(e.get("results"))
            if final["linear"] is not None:
                self.linear, self.linear_split = final["linear"], final["linear_split"]
            if final["knn"] is not None:
                self.knn = final["knn"]

    def _close_segment(self, end: float | None) -> None:
        if self._segment is not None and end is not None:
            self.trained += max(0.0, end - self._segment)
        self._segment = None

    def _resume_from(self, e: dict[str, Any]) -> None:
        """``run_resumed``: the work after the checkpoint's step is done again, so the
        points logged after it are superseded by the ones that follow."""
        step = _finite(e.get("step"))
        if step is None:
            return
        for series in self.series.values():
            series.truncate_after(step)
        self.step = int(step)
        epoch = _finite(e.get("epoch"))
        if epoch is not None:  # the checkpoint's epoch: the epochs it holds complete
            self.epoch = int(epoch)
        for name in ("knn", "linear", "lr", "ips"):
            values = self.series[name].value
            setattr(self, name, values[-1] if values else None)
        losses = self.series["loss"].value
        self.last_loss = losses[-1] if losses else None


def epochs_done(kind: Any, epoch: float | None) -> int | None:
    """How many epochs an event says are complete. Its ``epoch`` is 0-based: ``epoch``,
    ``val``, ``probe`` and ``run_finished`` come after that epoch ended (``epoch + 1``
    done); a ``step`` is work inside it (``epoch`` done before it); ``checkpoint``,
    ``run_stopped`` and ``run_resumed`` name the position training continues from, which
    is the number done. None for other events."""
    if epoch is None:
        return None
    if kind in ("epoch", "val", "probe", "run_finished"):
        return int(epoch) + 1
    if kind in ("step", "checkpoint", "run_stopped", "run_resumed"):
        return int(epoch)
    return None


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``0 epochs`` (``nouns``: an irregular plural), for every
    count the CLI and the trainer print."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def stopped_words(
    done: int, epochs: int | None, step: int | None, mid_epoch: bool | None
) -> str:
    """What a stop left, in the 0-based epoch numbers the log and the epoch lines use:
    ``stopped after epoch 2 (3 of 30 epochs done)``, ``stopped in epoch 3 at step 95 (3 of 30
    epochs done)``. ``done``: epochs complete (``run_stopped``'s ``epoch``); ``mid_epoch``:
    whether the epoch after them had begun (None: unknown)."""
    count = f"{done} of {plural(epochs, 'epoch')}" if epochs else plural(done, "epoch")
    count = f"({count} done)"
    at = "" if step is None else f" at step {step}"
    if mid_epoch:
        return f"stopped in epoch {done}{at} {count}"
    if mid_epoch is None:
        return f"stopped{at} {count}"
    if done == 0:
        return f"stopped before epoch 0 began {count}"
    return f"stopped after epoch {done - 1} {count}"


def newest_first(summaries: Iterable[RunSummary]) -> list[RunSummary]:
    """Runs newest first by creation (a resume does not move a run to the top); runs with
    no time yet by their id's stamp. The order of the app's runs table and ``sslterm runs``."""
    return sorted(summaries, key=lambda s: (s.created or s.started or 0.0, _stamp(s.id)),
                  reverse=True)


def launch_start(started: dict[str, Any], t: float | None, before: float | None) -> float | None:
    """When the launch that wrote the ``run_started`` event ``started`` (at ``t``) began: its
    ``launched`` time (status.json's ``started``, before the imports, data and model the
    trainer sets up first; whole seconds), else ``t`` (logs written before that field), never
    before the previous launch's last event ``before``."""
    launched = parse_time(started.get("launched"))
    if launched is None or t is None or launched > t:
        return t
    return max(launched, before) if before is not None else launched


def profile_method(path: Path) -> str:
    """``model.method`` of a frozen profile; ``simclr`` for profiles made before there
    was a choice, "" when the file cannot be read."""
    try:
        profile = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    model = profile.get("model")
    return str(model.get("method") or "simclr") if isinstance(model, dict) else "simclr"


def final_table(results: Any) -> list[tuple[str, str, float]]:
    """(protocol, metric, value) of every final number in ``results.json``: each protocol
    record of ``final`` (``linear_eval``, ``knn``, ``online_probe``) by its numeric keys,
    the plain numbers (``ssl_val_loss``, ...) under ``ssl``."""
    final = results.get("final") if isinstance(results, dict) else None
    rows: list[tuple[str, str, float]] = []
    for key, value in (final if isinstance(final, dict) else {}).items():
        if isinstance(value, dict):
            rows += [(key, k, v) for k, v in value.items() if k != "epoch" and _finite(v) is not None]
        elif _finite(value) is not None:
            rows.append(("ssl", key.removeprefix("ssl_"), float(value)))
    return rows


def final_accuracies(results: Any) -> dict[str, Any]:
    """The final linear-eval (test top-1 where there is a test split, else val) and kNN
    top-1 from ``results.json`` as ``build_results`` writes it (also the ``results`` of
    ``run_finished``); None where missing."""
    final = results.get("final") if isinstance(results, dict) else None
    final = final if isinstance(final, dict) else {}
    linear = final.get("linear_eval") if isinstance(final.get("linear_eval"), dict) else {}
    knn = final.get("knn") if isinstance(final.get("knn"), dict) else {}
    value, split = _linear(linear)
    return {"linear": value, "linear_split": split, "knn": _finite(knn.get("val_top1"))}


def _linear(record: dict[str, Any]) -> tuple[float | None, str]:
    """Linear-eval top-1 and its split: test where there is one, else val."""
    for split in ("test", "val"):
        value = _finite(record.get(f"{split}_top1"))
        if value is not None:
            return value, split
    return None, ""


def _metrics(kind: Any, e: dict[str, Any]) -> list[tuple[str, Any]]:
    """(series name, value) pairs an event adds to the charts: every numeric field
    (:func:`series_name`), plus ``linear``, the linear eval on the test split where
    the run has one (the number a result is quoted by)."""
    if kind not in ("step", "epoch", "val", "probe"):
        return []
    protocol = str(e.get("protocol") or "linear")
    out = [
        (series_name(kind, key, protocol), value)
        for key, value in e.items()
        if key not in SERIES_SKIP and _finite(value) is not None
    ]
    if kind == "probe" and protocol == "linear":
        out.append(("linear", _linear(e)[0]))
    return out


def event_metrics(e: dict[str, Any]) -> list[tuple[str, float]]:
    """(series name, value) of every finite number an event adds to the charts."""
    out = []
    for name, value in _metrics(e.get("kind"), e):
        v = _finite(value)
        if v is not None:
            out.append((name, v))
    return out


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "kind" in obj else None


# -- every run --------------------------------------------------------------------------
class RunIndex:
    """One :class:`RunSummary` per run directory under an output folder."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.runs: dict[str, RunSummary] = {}
        self.incomplete = False
        """True when the last refresh ran out of its time budget before reading every log."""

    def refresh(
        self, only: Iterable[str] | None = None, budget: float | None = None
    ) -> tuple[set[str], set[str]]:
        """Find new and removed runs and update summaries (all, or just ``only``).

        Every status is read first (cheap: rows can show at once), then the event
        logs, newest run first, until ``budget`` seconds are spent; the rest wait
        for the next call (``incomplete``). Returns (changed ids, removed ids)."""
        deadline = None if budget is None else time.monotonic() + budget
        present = {r.id: r for r in iter_runs(self.output_dir)}
        removed = set(self.runs) - set(present)
        for rid in removed:
            del self.runs[rid]
        changed: set[str] = set()
        wanted = set(present) if only is None else set(only) | (set(present) - set(self.runs))
        ids = sorted(wanted & set(present), key=_stamp, reverse=True)
        for rid in ids:
            if rid not in self.runs:
                self.runs[rid] = RunSummary(present[rid])
            if _safe_update(self.runs[rid], events=False):
                changed.add(rid)
        self.incomplete = False
        for rid in ids:
            if deadline is not None and time.monotonic() > deadline:
                self.incomplete = True
                break
            if _safe_update(self.runs[rid]):
                changed.add(rid)
        return changed, removed

    def ordered(self) -> list[RunSummary]:
        """Newest first by creation (:func:`newest_first`)."""
        return newest_first(self.runs.values())


def _safe_update(summary: RunSummary, events: bool = True) -> bool:
    """A run deleted or unreadable mid-read is skipped this time, not fatal to the rest."""
    try:
        return summary.update(events=events)
    except OSError:
        return False


_STAMP = re.compile(r"(\d{8}-\d{6})(?:-(\d+))?$")


def _stamp(run_id: str) -> tuple[str, int, str]:
    """Sort key from the ``<name>-<UTC stamp>[-n]`` run id (ids without one sort first)."""
    m = _STAMP.search(run_id)
    return (m.group(1), int(m.group(2) or 0), run_id) if m else ("", 0, run_id)
