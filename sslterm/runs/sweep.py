"""Sweeps: a grid of overrides expanded into the run queue, one run per grid point.

``sslterm sweep P train.base_lr=0.1,0.3 train.batch_size=64,128`` queues four items,
each named by its values (``<profile>-base_lr0.1-batch_size64``, the run id adds the
timestamp), and records the sweep beside the queue::

    <output_dir>/.sweeps/<sweep-id>.json   the profile, the swept keys and every point

The queue runner writes each item's sweep and point into its history, so a sweep's
runs are found again from the run directories and the queue alone (see
:func:`sweep_status`), by the app and by a later ``sslterm sweep --show``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sslterm.errors import UserError
from sslterm.files import atomic_write_text
from sslterm.runs import queue
from sslterm.runs.meta import RunMeta
from sslterm.runs.store import ACTIVE, RunDir, check_output_dir, utc_now

SWEEPS_DIR = ".sweeps"
SEED_KEY = "train.seed"
"""Runs that differ only in this key form a seed group (:mod:`sslterm.runs.groups`)."""
NAME_MAX = 100
"""A profile name's limit (``Profile.name``)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_OPEN, _CLOSE = "[{(", "]})"


@dataclass(frozen=True)
class Sweep:
    id: str
    path: Path
    profile: str
    keys: tuple[str, ...]
    """The swept keys (two values or more), in the order given."""
    points: tuple[dict[str, str], ...]
    """Each grid point's value of every swept key, as written on the command line."""
    names: tuple[str, ...]
    parallel: int
    created: str
    kind: str = "sweep"
    """``sweep`` (a grid) or ``search`` (:mod:`sslterm.runs.search`: points added as Optuna
    asks for trials, one per trial number)."""
    pruned: tuple[int, ...] = ()
    """A search's points whose trials were pruned (their runs stopped early)."""


@dataclass(frozen=True)
class PointStatus:
    index: int
    values: dict[str, str]
    name: str
    state: str
    """``waiting`` (in the queue), ``starting`` (taken by the runner), ``removed`` (from
    the queue, or its run deleted, by hand), ``failed`` (see ``error``: also a run that could not start),
    ``pruned`` (a search stopped it early) or the run's own state."""
    run: RunDir | None
    error: str


def split_values(text: str) -> list[str]:
    """``a,b,c`` -> ``[a, b, c]``, keeping commas inside brackets and quotes, so a TOML
    list (``[1,2]``) or a quoted string stays one value."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_axes(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``key=a,b`` items as (key, values); a key given twice or an empty value is an error
    naming the item."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = split_values(raw)
        if not sep or not key or "" in values:
            raise UserError(f"<command line>: {item}: write KEY=VALUE[,VALUE...]")
        if key in (k for k, _ in axes):
            raise UserError(f"<command line>: {key}: given twice")
        axes.append((key, values))
    return axes


def grid(axes: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
    """Every combination of the axes' values, the last key changing fastest."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


def point_name(stem: str, values: dict[str, str]) -> str:
    """``<stem>-<leaf><value>-...``: the run's name, valid as a profile name (letters,
    digits, ``. _ -``, at most 100 characters)."""
    parts = [stem] + [f"{key.rsplit('.', 1)[-1]}{value}" for key, value in values.items()]
    name = _UNSAFE.sub("_", "-".join(parts)).strip("-")
    return name[:NAME_MAX] or "sweep"


def point_label(label: str, values: dict[str, str]) -> str:
    """A point's label: the sweep's, then its values (``base ema=0.99``), all but the seed's,
    so the runs of a seed group share one label (the legend and table name the group)."""
    parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items()
             if key != SEED_KEY]
    return " ".join([label, *parts])


def sweeps_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / SWEEPS_DIR


def read_text(path: str | Path) -> str:
    """A profile's (or a space file's) text; an unreadable file is one line, naming it as
    given."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None


def create_sweep(
    output_dir: str | Path,
    profile_path: str | Path,
    axes: Sequence[tuple[str, Sequence[str]]],
    fixed: Sequence[str] = (),
    parallel: int = 1,
    *,
    start_runner: bool = True,
    meta: RunMeta | None = None,
) -> Sweep:
    """Validate every point, record the sweep and queue its points (none is queued when
    one is invalid). ``fixed``: overrides every point shares; ``meta``: the runs' label
    (:func:`point_label`), tags and note."""
    from sslterm.profile.load import validate_text

    if parallel < 1:
        raise UserError(f"<command line>: --parallel: must be >= 1 (got {parallel})")
    path = Path(profile_path)
    text = read_text(profile_path)
    swept = [(k, v) for k, v in axes if len(v) > 1]
    if not swept:
        raise UserError("<command line>: nothing to sweep: give a KEY=A,B with two values or more")
    fixed = [*fixed, *(f"{k}={v[0]}" for k, v in axes if len(v) == 1)]
    points = grid(swept)
    stem = validate_text(text, str(path), fixed).name  # the file's stem unless it names itself
    names = [point_name(stem, p) for p in points]
    overrides = [[*fixed, *(f"{k}={v}" for k, v in p.items()), f"name={json.dumps(n)}"]
                 for p, n in zip(points, names, strict=True)]
    for point in overrides:
        validate_text(text, str(path), point)
    check_output_dir(output_dir)
    target = new_record(sweeps_dir(output_dir), f"{stem}-sweep")
    sweep = Sweep(target.stem, target, str(path), tuple(k for k, _ in swept), tuple(points),
                  tuple(names), parallel, utc_now())
    atomic_write_text(sweep.path, json.dumps(_to_json(sweep), indent=2) + "\n")
    meta = meta or RunMeta()
    for i, (name, over) in enumerate(zip(names, overrides, strict=True)):
        own = replace(meta, label=point_label(meta.label, points[i])) if meta.label else meta
        queue.enqueue(output_dir, text, name, over, source=str(path), start_runner=False,
                      parallel=parallel, sweep=sweep.id, point=i, meta=own)
    if start_runner:
        queue.ensure_runner(output_dir)
    return sweep


def new_record(folder: Path, name: str) -> Path:
    """Claim ``<name>-<UTC timestamp>[-n].json`` (exclusive create: two sweeps started in
    the same second get distinct ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    for n in range(1000):
        path = folder / f"{base if n == 0 else f'{base}-{n}'}.json"
        try:
            path.open("x").close()
        except FileExistsError:
            continue
        return path
    raise UserError(f"{folder}: could not record a sweep for {name}")


def _to_json(sweep: Sweep) -> dict[str, Any]:
    return {"id": sweep.id, "profile": sweep.profile, "keys": list(sweep.keys),
            "points": list(sweep.points), "names": list(sweep.names), "parallel": sweep.parallel,
            "created": sweep.created, "kind": sweep.kind, "pruned": list(sweep.pruned)}


def load_sweep(path: Path) -> Sweep:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Sweep(data["id"], path, data["profile"], tuple(data["keys"]),
                 tuple(data["points"]), tuple(data["names"]), int(data["parallel"]),
                 str(data.get("created", "")), str(data.get("kind") or "sweep"),
                 tuple(int(i) for i in data.get("pruned") or ()))


def list_sweeps(output_dir: str | Path) -> list[Sweep]:
    """Every recorded sweep, oldest first."""
    folder = sweeps_dir(output_dir)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(load_sweep(path))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
    return sorted(out, key=lambda s: (s.created, s.id))


def find_sweep(ref: str | None, output_dir: str | Path) -> Sweep:
    """A sweep by id or unique id prefix; the newest one for None."""
    sweeps = list_sweeps(output_dir)
    if ref is None:
        if not sweeps:
            raise UserError(f"no sweep under {output_dir}")
        return sweeps[-1]
    hits = [s for s in sweeps if s.id == ref] or [s for s in sweeps if s.id.startswith(ref)]
    if len(hits) != 1:
        why = "is ambiguous" if hits else f"not found under {output_dir}"
        raise UserError(f"sweep {ref!r} {why}")
    return hits[0]


def sweep_status(sweep: Sweep, output_dir: str | Path) -> list[PointStatus]:
    """Where each point stands: waiting in the queue, being started by the runner, its
    run (and that run's state), or why it never ran."""
    out = Path(output_dir)
    waiting = {i.point for i in queue.pending(out) if i.sweep == sweep.id}
    taken = {h.get("point"): h for h in queue.history(out, limit=100_000)
             if h.get("sweep") == sweep.id}
    runner = None
    rows = []
    for i, (values, name) in enumerate(zip(sweep.points, sweep.names, strict=True)):
        run, error = None, ""
        if i in waiting:
            state = "waiting"
        elif i in taken and taken[i].get("run"):
            run = RunDir(out / taken[i]["run"])
            state, error = run.state() if run.path.is_dir() else ("removed", "")
            state = "starting" if state == "queued" else state  # its supervisor starts
        elif i in taken:
            state, error = "failed", str(taken[i].get("error") or "")
        else:
            runner = queue.runner_alive(out) if runner is None else runner
            state = "starting" if runner else "removed"
        if i in sweep.pruned and state not in ("waiting", "failed", "removed", "finished"):
            state = "pruned"
        rows.append(PointStatus(i, values, name, state, run, error))
    return rows


def finished(rows: Sequence[PointStatus]) -> bool:
    """No point waits, starts or runs any more."""
    return all(r.state not in ("waiting", "starting", *ACTIVE) for r in rows)
