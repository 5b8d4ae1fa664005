"""Seed groups and paper-ready output: runs that differ only in train.seed are reported as
mean ± std (numpy's, ddof=1) and n by ``sslterm table`` (md, LaTeX, CSV), the sweep table
and the compare view, and drawn as a band by ``sslterm plot`` (legend from labels, the split
in the axis name)."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from sslterm.report.sweep_table import SweepRow, table_cells
from sslterm.runs.events import EventWriter
from sslterm.runs.meta import edit_meta
from sslterm.runs.store import RunDir, new_run_dir
from sslterm.runs.sweep import Sweep

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
LINEAR = {0: 61.25, 1: 63.5, 2: 60.0}
KNN = {0: 55.0, 1: 57.25, 2: 56.5}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))


def make_run(out: Path, name: str, seed: int, lr: float, linear: float, knn: float) -> RunDir:
    """A finished run: its frozen profile, kNN at each of three epochs, results.json."""
    run = new_run_dir(out, name)
    run.profile.write_text(f'name = "{name}"\n[train]\nseed = {seed}\nbase_lr = {lr}\n')
    run.update_status(state="finished", run_id=run.id, profile=name, host=socket.gethostname())
    writer = EventWriter(run.path)
    writer.emit("run_started", epochs=3, steps_per_epoch=2)
    for epoch in range(3):
        writer.emit("step", epoch=epoch, step=2 * epoch + 1, loss=1.0 / (epoch + 1), lr=lr)
        writer.emit("val", epoch=epoch, step=2 * epoch + 2, loss=1.0, top1=50.0, top5=90.0,
                    knn_top1=knn - 10 * (2 - epoch), knn_top5=90.0)
    writer.emit("probe", epoch=2, step=6, protocol="linear", val_top1=linear + 1,
                test_top1=linear)
    writer.emit("run_finished", results={})
    writer.close()
    final = {"linear_eval": {"val_top1": linear + 1, "test_top1": linear},
             "knn": {"val_top1": knn}, "ssl_val_loss": 1.0}
    run.results.write_text(json.dumps({"run_id": run.id, "final": final}))
    return run


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, list[RunDir], RunDir]:
    out = tmp_path / "runs"
    group = [make_run(out, f"base-seed{s}", s, 0.1, LINEAR[s], KNN[s]) for s in (0, 1, 2)]
    other = make_run(out, "highlr", 0, 0.5, 40.0, 35.0)
    return out, group, other


def test_table_reports_numpys_mean_and_std_over_each_seed_group(seeded) -> None:
    out, group, other = seeded
    ids = [r.id for r in (*group, other)]
    done = cli("-o", str(out), "table", *ids, "--metrics", "linear,knn", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["name"], r["n"]) for r in rows] == [("base", "3"), (other.id, "1")]
    base = rows[0]
    for metric, values in (("linear", LINEAR), ("knn", KNN)):
        xs = np.array(list(values.values()))
        assert float(base[f"{metric}_mean"]) == pytest.approx(xs.mean(), abs=1e-12)
        assert float(base[f"{metric}_std"]) == pytest.approx(xs.std(ddof=1), abs=1e-12)
    assert rows[1]["n"] == "1" and rows[1]["linear_std"] == ""

    edit_meta(other, label="high lr")
    md = cli("-o", str(out), "table", *ids, "--format", "md").stdout.splitlines()
    assert md[0] == "| run | n | linear test top-1 (%) | kNN val top-1 (%) |"
    mean, std = np.mean(list(LINEAR.values())), np.std(list(LINEAR.values()), ddof=1)
    assert md[2] == f"| base | 3 | **{mean:.2f} ± {std:.2f}** | **{np.mean(list(KNN.values())):.2f}" \
                    f" ± {np.std(list(KNN.values()), ddof=1):.2f}** |"
    assert md[3].startswith("| high lr | 1 | 40.00 |")
    target = out.parent / "tables" / "t.tex"
    latex = cli("-o", str(out), "table", *ids, "--format", "latex", "--out", str(target))
    assert latex.returncode == 0, latex.stderr
    tex = target.read_text()
    assert r"\toprule" in tex and r"linear test top-1 (\%)" in tex
    assert rf"\textbf{{{mean:.2f} $\pm$ {std:.2f}}}" in tex

    bad = cli("-o", str(out), "table", *ids, "--metrics", "linear,top9")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert "--metrics top9: no run has it (they have: " in bad.stderr


def test_plot_draws_a_seed_group_as_a_band_labelled_for_a_paper(seeded, tmp_path: Path) -> None:
    out, group, other = seeded
    fig = tmp_path / "knn.svg"
    done = cli("-o", str(out), "plot", *(r.id for r in (*group, other)), "-m", "knn",
               "--x", "epoch", "--title", "kNN during training", "--label",
               f"{other.id}=higher lr", "--out", str(fig))
    assert done.returncode == 0, done.stderr
    root = ET.parse(fig).getroot()
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {"base (n=3)", "higher lr", "kNN val top-1 %", "kNN during training"} <= texts, texts
    bands = [g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("band-")]
    assert len(bands) == 1  # one group of several runs: one band
    assert float(root.get("width").removesuffix("pt")) == pytest.approx(3.5 * 72)

    apart = cli("-o", str(out), "plot", *(r.id for r in group), "-m", "linear", "--no-groups",
                "--out", str(fig))
    assert apart.returncode == 0, apart.stderr
    root = ET.parse(fig).getroot()
    assert not [g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("band-")]
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {r.id for r in group} | {"linear test top-1 %"} <= texts


def test_a_seed_sweep_shows_one_row_per_group_with_mean_std_and_n() -> None:
    sweep = Sweep("s", Path("s.json"), "p.toml", ("train.base_lr", "train.seed"),
                  (), (), 1, "")
    rows = [SweepRow(f"p{i}", {"train.base_lr": lr, "train.seed": str(seed)}, "finished",
                     f"r{i}", {"linear": value})
            for i, (lr, seed, value) in enumerate([("0.1", 0, 60.0), ("0.1", 1, 62.0),
                                                   ("0.3", 0, 70.0), ("0.3", 1, 71.0)])]
    header, cells = table_cells(sweep, rows, "linear")
    assert header == ["", "train.base_lr", "state", "n", "linear", "run"]
    assert cells == [["*", "0.3", "finished", "2", f"70.5 ± {np.std([70, 71], ddof=1):.2g}",
                      "2 runs"],
                     ["", "0.1", "finished", "2", f"61 ± {np.std([60, 62], ddof=1):.2g}",
                      "2 runs"]]


def test_compare_adds_a_column_per_seed_group(seeded) -> None:
    from sslterm.runs.groups import seed_groups
    from sslterm.runs.summary import RunSummary
    from sslterm.tui.screens.compare import results_rows

    _, group, other = seeded
    runs = [RunSummary(r) for r in (*group, other)]
    for s in runs:
        s.update()
    index = {s.id: i for i, s in enumerate(runs)}
    groups = [[index[s.id] for s in g] for g in seed_groups(runs, lambda s: s.run)]
    results = [json.loads(s.run.results.read_text()) for s in runs]
    heads, rows = results_rows(runs, results, groups)
    assert heads == [s.id for s in runs] + ["base (n=3)"]
    cells = dict(rows)["linear_eval test_top1"]
    values = list(LINEAR.values())
    assert cells[-1] == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
