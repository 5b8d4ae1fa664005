"""Every series of a run, exactly as its event log holds it, as CSV or JSON.

One series per numeric key of each progress event kind, named as the app and
``sslterm plot`` name them (:func:`sslterm.runs.summary.series_name`: ``loss``,
``momentum``, ``epoch_online_top1``, ``val_top1``, ``knn``, ``linear_test_top1``),
each point with the event's ``step``, ``epoch`` and wall time ``t``. The log is read through
:func:`sslterm.runs.events.read_events`, so work a resume redid appears once.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from sslterm.runs.events import read_events
from sslterm.runs.store import RunDir
from sslterm.runs.summary import SERIES_SKIP, series_name

KINDS = ("step", "epoch", "val", "probe")
POSITION = ("step", "epoch", "t")
FIELDS = ("run", "series", *POSITION, "value")
FORMATS = ("csv", "json")


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def series_rows(run_id: str, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per numeric value of every progress event, in log order."""
    rows = []
    for e in events:
        kind = e.get("kind")
        if kind not in KINDS:
            continue
        where = {k: e.get(k) for k in POSITION}
        protocol = str(e.get("protocol") or "linear")
        for key, value in e.items():
            if key not in SERIES_SKIP and _numeric(value):
                name = series_name(kind, key, protocol)
                rows.append({"run": run_id, "series": name, **where, "value": value})
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Long format, one value a line (floats written exactly: ``repr`` round-trips)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(run_id: str, rows: list[dict[str, Any]]) -> str:
    """``{"run": id, "series": {name: {"step": [...], "epoch": [...], "t": [...],
    "value": [...]}}}``: columns per series, what a notebook wants to plot."""
    out: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        columns = out.setdefault(row["series"], {k: [] for k in (*POSITION, "value")})
        for key, column in columns.items():
            column.append(row[key])
    return json.dumps({"run": run_id, "series": out}, indent=1) + "\n"


def export_run(run: RunDir, fmt: str) -> str:
    """The run's every series in ``fmt`` (``csv`` or ``json``)."""
    rows = series_rows(run.id, read_events(run.path))
    return to_csv(rows) if fmt == "csv" else to_json(run.id, rows)
