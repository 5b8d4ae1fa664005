"""Seed groups: runs whose frozen profiles differ only in ``train.seed`` (and the run's
name, which a sweep derives from the seed) are repeats of one experiment, reported as
mean ± std over their seeds by the sweep table, the compare view, ``sslterm plot`` (a
band) and ``sslterm table``.

The std is the sample standard deviation (``ddof=1``, what papers quote for a handful of
seeds); a group of one run has none.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sslterm.runs.query import frozen_values
from sslterm.runs.store import RunDir
from sslterm.runs.sweep import SEED_KEY

T = TypeVar("T")
IGNORED = frozenset({"name", "description", SEED_KEY, "launch.output_dir", "launch.machine_rank",
                     "launch.main_process_ip", "launch.main_process_port"})
"""Keys that do not make two runs different experiments: the seed, names, where runs are
written and how the machines of one run find each other."""
_SEED_PART = re.compile(r"-seed[^-]*")


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (None for one value) and count of a metric over a group."""

    mean: float
    std: float | None
    n: int

    def text(self, digits: int = 2) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def stat(values: Sequence[float]) -> Stat | None:
    """Mean ± sample std of the finite ``values`` (None when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return Stat(mean, None, 1)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return Stat(mean, math.sqrt(var), len(xs))


def experiment_key(run: RunDir) -> str:
    """What a run trains, with the seed left out: equal keys, one seed group."""
    values = {k: v for k, v in frozen_values(run).items() if k not in IGNORED}
    return json.dumps(values, sort_keys=True, default=str) if values else f"<unread {run.path}>"


def seed_groups(items: Sequence[T], run_of: Callable[[T], RunDir]) -> list[list[T]]:
    """``items`` (runs, summaries, ...) in seed groups, in the order the groups' first items
    come; a run whose profile cannot be read is a group of its own."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(experiment_key(run_of(item)), []).append(item)
    return list(groups.values())


def seed_of(run: RunDir) -> int | None:
    seed = frozen_values(run).get(SEED_KEY)
    return seed if isinstance(seed, int) else None


def group_name(names: Sequence[str], labels: Sequence[str], profiles: Sequence[str]) -> str:
    """A group's name: the label its runs share, else their profile name without the
    ``-seed<N>`` a sweep adds, where they agree; else the first run's name."""
    if labels and all(labels) and len(set(labels)) == 1:
        return labels[0]
    stems = {_SEED_PART.sub("", p) for p in profiles if p}
    if len(names) > 1 and len(stems) == 1:
        return stems.pop()
    return names[0] if names else ""
