"""A sweep's table: one row per grid point, its swept values, state and final metrics,
sortable by any metric, the best row marked. Shared by ``sslterm sweep`` and the app.

A sweep over ``train.seed`` shows one row per seed group (the points that differ only in
the seed): each metric's mean ± sample std over the group's finished runs, and their
number ``n``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sslterm.runs.groups import stat
from sslterm.runs.summary import final_accuracies
from sslterm.runs.sweep import SEED_KEY, PointStatus, Sweep

BEST = "*"
LEADING = ("linear", "knn")
"""Protocol accuracies first, then the numbers of results.json's ``final``."""


@dataclass(frozen=True)
class SweepRow:
    name: str
    values: dict[str, str]
    state: str
    run: str
    metrics: dict[str, float] = field(default_factory=dict)
    """Final metrics; for a seed group the means."""
    spread: dict[str, float] = field(default_factory=dict)
    """A seed group's sample std of each metric (groups of two runs or more)."""
    n: int = 1
    """The runs a seed group's numbers are over."""


def final_metrics(results: Any) -> dict[str, float]:
    """results.json's final numbers: ``linear`` (test top-1, else val) and ``knn`` top-1,
    then every top-level number (``ssl_val_loss``, a method's ``ssl_val_<name>``...)."""
    found = final_accuracies(results)
    metrics = {k: found[k] for k in LEADING if found[k] is not None}
    final = results.get("final") if isinstance(results, dict) else None
    for key, value in (final if isinstance(final, dict) else {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[key] = float(value)
    return metrics


def _results(point: PointStatus) -> Any:
    if point.run is None:
        return None
    try:
        return json.loads(point.run.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sweep_rows(points: Sequence[PointStatus]) -> list[SweepRow]:
    return [SweepRow(p.name, p.values, p.state, p.run.id if p.run else "",
                     final_metrics(_results(p))) for p in points]


def seeded(sweep: Sweep) -> bool:
    """Whether the sweep's rows are seed groups."""
    return SEED_KEY in sweep.keys


def seed_rows(sweep: Sweep, rows: Sequence[SweepRow]) -> list[SweepRow]:
    """One row per seed group (grid order of the groups' first points); the rows as they
    are when the sweep has no seed axis."""
    if not seeded(sweep):
        return list(rows)
    groups: dict[tuple[tuple[str, str], ...], list[SweepRow]] = {}
    for row in rows:
        key = tuple((k, v) for k, v in row.values.items() if k != SEED_KEY)
        groups.setdefault(key, []).append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r.metrics]
        stats = {m: stat([r.metrics[m] for r in done if m in r.metrics])
                 for m in metric_names(done)}
        states = sorted({r.state for r in members})
        state = states[0] if len(states) == 1 else f"{len(done)}/{len(members)} done"
        out.append(SweepRow(
            members[0].name, dict(key), state, f"{len(members)} runs",
            {m: st.mean for m, st in stats.items() if st},
            {m: st.std for m, st in stats.items() if st and st.std is not None},
            len(done)))
    return out


def metric_names(rows: Sequence[SweepRow]) -> list[str]:
    """Every metric some row has, the protocol accuracies first."""
    names: list[str] = []
    for row in rows:
        names += [k for k in row.metrics if k not in names]
    return [*(k for k in LEADING if k in names), *(k for k in names if k not in LEADING)]


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric


def default_sort(rows: Sequence[SweepRow]) -> str | None:
    """The metric a sweep is judged by: linear eval, else kNN, else the first one there."""
    names = metric_names(rows)
    return names[0] if names else None


def _rank(metric: str) -> Callable[[SweepRow], tuple[bool, float]]:
    """Sort key: rows with ``metric``, best first, then rows without it."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    return lambda row: (metric not in row.metrics, sign * row.metrics.get(metric, 0.0))


def best_index(rows: Sequence[SweepRow], metric: str | None) -> int | None:
    """The row with the best ``metric``, the first one of a tie (None: no row has it)."""
    have = [i for i, row in enumerate(rows) if metric is not None and metric in row.metrics]
    if metric is None or not have:
        return None
    return min(have, key=lambda i: _rank(metric)(rows[i]))


def sort_rows(rows: Sequence[SweepRow], metric: str | None) -> list[SweepRow]:
    """Best first by ``metric``; rows without it last; ties and the rest in grid order."""
    return list(rows) if metric is None else sorted(rows, key=_rank(metric))


def table_cells(
    sweep: Sweep, rows: Sequence[SweepRow], metric: str | None
) -> tuple[list[str], list[list[str]]]:
    """Header and cells (rows sorted by ``metric``, the best one marked), for any table;
    a seed sweep's rows are its seed groups (:func:`seed_rows`), with an ``n`` column."""
    grouped = seeded(sweep)
    rows = seed_rows(sweep, rows)
    names = metric_names(rows)
    ordered = sort_rows(rows, metric)
    best = best_index(ordered, metric)
    keys = [k for k in sweep.keys if k != SEED_KEY]
    header = ["", *keys, "state", *(["n"] if grouped else []), *names, "run"]
    cells = [[BEST if i == best else "", *(row.values.get(k, "") for k in keys), row.state,
              *([str(row.n)] if grouped else []),
              *(_fmt(row.metrics.get(n), row.spread.get(n)) for n in names), row.run or "—"]
             for i, row in enumerate(ordered)]
    return header, cells


def _fmt(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if spread is None else f"{value:.4g} ± {spread:.2g}"


def render(sweep: Sweep, rows: Sequence[SweepRow], metric: str | None) -> Any:
    """The table as a rich renderable for the terminal."""
    from rich.table import Table

    header, cells = table_cells(sweep, rows, metric)
    title = f"{sweep.kind} {sweep.id}" + (f", sorted by {metric}" if metric else "")
    table = Table(title=title, box=None, title_justify="left")
    for name in header:
        table.add_column(name, no_wrap=True)
    for line in cells:
        table.add_row(*line)
    return table
