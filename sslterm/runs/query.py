"""Finding runs: a filter expression, a sort key and a group key over run summaries, the
same for the app's runs table (``/``, ``g``) and ``sslterm runs --filter --sort``.

A filter is words separated by spaces (quotes keep spaces in one word), all of which a run
must match:

* ``word``: a part of the run's id, label, a tag, method, state or profile name (any case);
* ``KEY=VALUE`` (also ``!=``): a field (``label``, ``tag``, ``method``, ``state``,
  ``profile``, ``id``, ``note``) or a profile key (``train.base_lr=0.1``, ``model.method=byol``)
  equal to VALUE, which may hold ``*`` wildcards; numbers compare as numbers (``0.10=0.1``);
* ``KEY>VALUE``, ``<``, ``>=``, ``<=``: a number: a final metric (``linear``, ``knn``,
  ``loss``, ``epoch``, ``ips``) or a numeric profile key (``train.epochs>=100``).
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sslterm.errors import UserError
from sslterm.runs.store import RunDir
from sslterm.runs.summary import RunSummary, newest_first

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIELDS = ("id", "label", "tag", "method", "state", "profile", "note")
METRICS = ("linear", "knn", "loss", "epoch", "ips")
LOWER_IS_BETTER = frozenset({"loss"})
SORT_KEYS = ("created", "id", "label", "state", "method", "profile", *METRICS)
GROUP_KEYS = ("method", "state", "profile", "tag", "label")
"""What the app's ``g`` cycles through (any field or profile key works headless)."""
_TERM = re.compile(r"([A-Za-z_][\w.]*)(!=|>=|<=|=|>|<)(.*)", re.DOTALL)
_NUMERIC = (">", "<", ">=", "<=")


@dataclass(frozen=True)
class Term:
    key: str
    """A field, a metric, a dotted profile key, or "" for a bare word."""
    op: str
    value: str


@lru_cache(maxsize=1)
def profile_keys() -> frozenset[str]:
    """Every dotted profile key the schema knows (a typo in a filter is named at once)."""
    from sslterm.profile.edit import flatten
    from sslterm.profile.schema import Profile

    return frozenset(k for k, _ in flatten(Profile().model_dump(mode="json")))


def _check_key(key: str, where: str) -> None:
    if key in FIELDS or key in METRICS or key == "created":
        return
    if "." in key and key in profile_keys():
        return
    known = ", ".join((*FIELDS, *METRICS))
    raise UserError(f"{where}: unknown key {key!r}: use {known} or a profile key "
                    "(train.base_lr)")


def parse_filter(text: str, where: str = "--filter") -> list[Term]:
    """The terms of a filter expression (see the module docstring)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UserError(f"{where} {text!r}: {exc}") from None
    terms = []
    for word in words:
        m = _TERM.fullmatch(word)
        if m is None:
            terms.append(Term("", "", word))
            continue
        key, op, value = m.groups()
        _check_key(key, f"{where} {word!r}")
        if op in _NUMERIC and _number(value) is None:
            raise UserError(f"{where} {word!r}: {op} compares numbers; {value!r} is not one")
        if op in _NUMERIC and key in FIELDS:
            raise UserError(f"{where} {word!r}: {key} is text; use = or !=")
        terms.append(Term(key, op, value))
    return terms


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def frozen_values(run: RunDir) -> dict[str, Any]:
    """The run's frozen profile as dotted key -> value (read again only when it changed)."""
    try:
        st = os.stat(run.profile)
    except OSError:
        return {}
    return _frozen(str(run.profile), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _frozen(path: str, _mtime: int, _size: int) -> dict[str, Any]:
    from sslterm.profile.edit import flatten

    try:
        with open(path, "rb") as fh:
            return dict(flatten(tomllib.load(fh)))
    except (OSError, ValueError):
        return {}


def field_values(s: RunSummary, key: str) -> list[Any]:
    """A run's values of a field, metric or profile key (a tag: each of its tags)."""
    if key == "tag":
        return list(s.tags)
    if key in ("id", "label", "method", "state", "profile", "note"):
        return [getattr(s, key)]
    if key == "loss":
        return [s.last_loss]
    if key in METRICS:
        return [getattr(s, key)]
    if key == "created":
        return [s.created or s.started]
    return [frozen_values(s.run).get(key)]


def _text(value: Any) -> str:
    from sslterm.profile.edit import format_value

    return format_value(value).lower()


def _equal(value: Any, wanted: str) -> bool:
    a, b = _number(value), _number(wanted)
    if a is not None and b is not None:
        return a == b
    return fnmatch.fnmatchcase(_text(value), wanted.lower())


def _compare(value: Any, op: str, wanted: str) -> bool:
    a, b = _number(value), float(wanted)
    if a is None:
        return False
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


def matches(s: RunSummary, terms: Sequence[Term]) -> bool:
    """Whether a run matches every term."""
    for term in terms:
        if not term.key:
            word = term.value.lower()
            hay = (s.id, s.label, s.method, s.state, s.profile, *s.tags)
            if not any(word in h.lower() for h in hay):
                return False
            continue
        values = field_values(s, term.key)
        if term.op in ("=", "!="):
            hit = any(_equal(v, term.value) for v in values if v is not None)
            if hit != (term.op == "="):
                return False
        elif not any(_compare(v, term.op, term.value) for v in values):
            return False
    return True


def filter_runs(summaries: Iterable[RunSummary], text: str, where: str = "--filter") -> list[RunSummary]:
    terms = parse_filter(text, where)
    return [s for s in summaries if matches(s, terms)]


def sort_runs(summaries: Iterable[RunSummary], key: str, reverse: bool = False,
              where: str = "--sort") -> list[RunSummary]:
    """Runs by ``key``: ``created`` newest first, accuracies best first, ``loss`` lowest
    first, text and profile keys ascending; runs without a value last. ``reverse`` flips
    the order of the runs that have one."""
    _check_key(key, f"{where} {key}")
    runs = newest_first(summaries)
    if key == "created":
        return runs[::-1] if reverse else runs
    descending = (key in METRICS and key not in LOWER_IS_BETTER) != reverse

    def value(s: RunSummary) -> Any:
        values = field_values(s, key)
        v = values[0] if values else None
        return None if v in (None, "") else v

    have = [s for s in runs if value(s) is not None]
    rest = [s for s in runs if value(s) is None]
    numbers = all(_number(value(s)) is not None for s in have)
    sort_key: Callable[[RunSummary], Any] = (
        (lambda s: _number(value(s))) if numbers else (lambda s: _text(value(s))))
    return sorted(have, key=sort_key, reverse=descending) + rest


def group_runs(summaries: Sequence[RunSummary], key: str) -> list[tuple[str, list[RunSummary]]]:
    """(group value, its runs) in the order the groups' first runs come; a run's tags are
    one group (``a, b``), a missing value is ``(none)``."""
    from sslterm.profile.edit import format_value

    groups: dict[str, list[RunSummary]] = {}
    for s in summaries:
        values = [v for v in field_values(s, key) if v not in (None, "")]
        name = ", ".join(format_value(v) for v in values) or "(none)"
        groups.setdefault(name, []).append(s)
    return list(groups.items())
