"""``sslterm table``: final metrics of runs as a paper's table, one row per seed group
(mean ± sample std and n over its runs, :mod:`sslterm.runs.groups`), in Markdown, LaTeX
(booktabs) or CSV; the best mean of each column in bold."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sslterm.errors import UserError
from sslterm.report.sweep_table import final_metrics, higher_is_better
from sslterm.runs.groups import Stat, group_name, seed_groups, stat
from sslterm.runs.summary import RunSummary, final_table

FORMATS = ("md", "latex", "csv")
DEFAULT_METRICS = ("linear", "knn")


@dataclass(frozen=True)
class Row:
    name: str
    runs: tuple[str, ...]
    stats: dict[str, Stat]

    @property
    def n(self) -> int:
        return len(self.runs)


def run_metrics(results: Any) -> dict[str, float]:
    """Every final number of ``results.json``: ``linear`` (test top-1, else val), ``knn``,
    the top-level ones (``ssl_val_loss``) and each protocol's as ``<protocol>.<key>``
    (``linear_eval.val_top1``, ``online_probe.train_top1``)."""
    out = final_metrics(results)
    for proto, key, value in final_table(results):
        if proto != "ssl":
            out[f"{proto}.{key}"] = value
    return out


def read_results(s: RunSummary) -> Any:
    try:
        return json.loads(s.run.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def column_title(metric: str, splits: set[str]) -> str:
    """A metric's column head, naming the split: ``linear test top-1 (%)``."""
    if metric == "linear":
        split = f" {splits.pop()}" if len(splits) == 1 else ""
        return f"linear{split} top-1 (%)"
    if metric == "knn":
        return "kNN val top-1 (%)"
    return metric


def table_rows(
    summaries: Sequence[RunSummary],
    metrics: Sequence[str],
    labels: Mapping[str, str] | None = None,
    groups: bool = True,
) -> tuple[list[Row], list[str]]:
    """One row per seed group of the runs that have results (``groups=False``: per run),
    and the ids of the runs left out for having none. A metric no run has is an error that
    lists the ones they have."""
    labels = labels or {}
    results = {s.id: read_results(s) for s in summaries}
    have = [s for s in summaries if run_metrics(results[s.id])]
    skipped = [s.id for s in summaries if s not in have]
    values = {s.id: run_metrics(results[s.id]) for s in have}
    known = sorted({m for v in values.values() for m in v})
    for m in metrics:
        if m not in known:
            raise UserError(f"--metrics {m}: no run has it (they have: "
                            f"{', '.join(known) or 'no results yet'})")
    parts = seed_groups(have, lambda s: s.run) if groups else [[s] for s in have]
    rows = []
    for members in parts:
        name = group_name([labels.get(s.id) or s.name for s in members],
                          [labels.get(s.id) or s.label for s in members],
                          [s.profile for s in members])
        stats = {m: st for m in metrics
                 if (st := stat([values[s.id][m] for s in members if m in values[s.id]]))}
        rows.append(Row(name, tuple(s.id for s in members), stats))
    return rows, skipped


def _best(rows: Sequence[Row], metric: str) -> float | None:
    means = [r.stats[metric].mean for r in rows if metric in r.stats]
    if len(means) < 2:
        return None
    return max(means) if higher_is_better(metric) else min(means)


def _latex(text: str) -> str:
    for ch, esc in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                    ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(ch, esc)
    return text


def render(rows: Sequence[Row], metrics: Sequence[str], fmt: str, splits: set[str],
           digits: int = 2) -> str:
    """The table as text in ``fmt`` (md, latex, csv)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    titles = [column_title(m, set(splits)) for m in metrics]
    best = {m: _best(rows, m) for m in metrics}
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["name", "n", *(f"{m}_{part}" for m in metrics for part in ("mean", "std")),
                         "runs"])
        for r in rows:
            cells: list[Any] = []
            for m in metrics:
                st = r.stats.get(m)
                cells += ["" if st is None else repr(st.mean),
                          "" if st is None or st.std is None else repr(st.std)]
            writer.writerow([r.name, r.n, *cells, " ".join(r.runs)])
        return buf.getvalue()

    def cell(r: Row, m: str, bold: tuple[str, str], pm: str) -> str:
        st = r.stats.get(m)
        if st is None:
            return "–"
        text = st.text(digits).replace(" ± ", pm)
        return f"{bold[0]}{text}{bold[1]}" if best[m] is not None and st.mean == best[m] else text

    if fmt == "md":
        lines = ["| " + " | ".join(["run", "n", *titles]) + " |",
                 "|" + "---|" + "--:|" * (len(titles) + 1)]
        lines += ["| " + " | ".join([r.name.replace("|", "\\|"), str(r.n),
                                     *(cell(r, m, ("**", "**"), " ± ") for m in metrics)]) + " |"
                  for r in rows]
        return "\n".join(lines) + "\n"
    lines = [r"\begin{tabular}{l" + "r" * (len(titles) + 1) + "}", r"\toprule",
             " & ".join(["run", "$n$", *(_latex(t) for t in titles)]) + r" \\", r"\midrule"]
    lines += [" & ".join([_latex(r.name), str(r.n),
                          *(cell(r, m, (r"\textbf{", "}"), r" $\pm$ ") for m in metrics)]) + r" \\"
              for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
