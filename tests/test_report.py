"""Figures and exports of run directories: ``sslterm plot`` writes figures that parse back,
``sslterm export`` writes exactly what the event log holds (real CLI subprocesses on an
event log written by the trainer's own EventWriter)."""

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

import pytest

from sslterm.report.export import series_rows
from sslterm.report.plot import time_unit
from sslterm.runs.events import EventWriter, append_resumed, read_events
from sslterm.runs.store import RunDir, new_run_dir
from sslterm.runs.summary import series_name

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"


def cli(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    prelude = code + "\nfrom sslterm.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", "import sys\n" + prelude, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="120"))


def write_run(out: Path, name: str, scale: float = 1.0) -> RunDir:
    """A finished run's log as the trainer writes it: steps (with a method scalar), epochs,
    val, probe, a resume that redoes step 3 onwards, the end."""
    run = new_run_dir(out, name)
    run.update_status(state="finished", run_id=run.id, profile=name, host=socket.gethostname())
    writer = EventWriter(run.path)
    writer.emit("run_started", epochs=2, steps_per_epoch=2)
    for step in (1, 2, 3):
        writer.emit("step", epoch=(step - 1) // 2, step=step, loss=scale / step, lr=0.1,
                    ips=100.0 + step, momentum=0.99 + step / 1000)
    writer.emit("epoch", epoch=0, step=2, loss=0.75 * scale, lr=0.1, ips=101.5, online_top1=12.5)
    writer.emit("val", epoch=0, step=2, loss=0.9, top1=50.0, top5=90.0, knn_top1=30.25,
                knn_top5=70.0)
    writer.close()
    append_resumed(run.path, epoch=1, step=2, checkpoint="checkpoints/epoch-0")
    writer = EventWriter(run.path)
    writer.emit("run_started", epochs=2, steps_per_epoch=2, resumed=True)
    for step in (3, 4):
        writer.emit("step", epoch=1, step=step, loss=scale / (step + 1), lr=0.05, ips=120.0,
                    momentum=0.995)
    writer.emit("epoch", epoch=1, step=4, loss=0.3 * scale, lr=0.05, ips=120.0,
                online_top1=float("nan"))
    writer.emit("probe", epoch=1, step=4, protocol="linear", val_top1=40.0, test_top1=39.5)
    writer.emit("run_finished", results={})
    writer.close()
    return run


@pytest.fixture
def runs(tmp_path: Path) -> list[RunDir]:
    return [write_run(tmp_path, "alpha"), write_run(tmp_path, "beta", scale=2.0)]


# -- export --------------------------------------------------------------------------------
def expected(run: RunDir) -> list[tuple[str, float | None, float | None, float, float]]:
    """(series, step, epoch, t, value) of every numeric value the log holds after resumes,
    named as the app names its series."""
    out = []
    for e in read_events(run.path):
        if e["kind"] in ("step", "epoch", "val", "probe"):
            for key, value in e.items():
                if key not in ("v", "kind", "t", "step", "epoch", "resumed") and isinstance(
                        value, (int, float)):
                    out.append((series_name(e["kind"], key), e["step"], e["epoch"], e["t"], value))
    return out


def test_export_csv_round_trips_the_event_log(runs: list[RunDir], tmp_path: Path) -> None:
    run = runs[0]
    target = tmp_path / "alpha.csv"
    out = cli("-o", str(run.path.parent), "export", run.id, "--format", "csv", "--out", str(target))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    got = [(r["series"], int(r["step"]), int(r["epoch"]), float(r["t"]), float(r["value"]))
           for r in rows]
    assert got == expected(run) and {r["run"] for r in rows} == {run.id}
    # the resume redid step 3: it is there once, with the redone value; NaN is no value
    assert [g[4] for g in got if g[0] == "loss" and g[1] == 3] == [0.25]
    assert {"momentum", "val_top1", "knn", "linear_test_top1"} <= {g[0] for g in got}
    assert [g[4] for g in got if g[0] == "epoch_online_top1"] == [12.5]


def test_export_json_to_stdout_round_trips_the_event_log(runs: list[RunDir]) -> None:
    run = runs[1]
    out = cli("-o", str(run.path.parent), "export", run.id, "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run"] == run.id
    got = sorted((name, s, e, t, v) for name, cols in data["series"].items()
                 for s, e, t, v in zip(cols["step"], cols["epoch"], cols["t"], cols["value"],
                                       strict=True))
    assert got == sorted(expected(run))


def test_series_rows_skip_flags_strings_and_lifecycle_events() -> None:
    events = [{"v": 2, "kind": "run_started", "t": 1.0, "epochs": 3},
              {"v": 2, "kind": "probe", "t": 2.0, "step": 4, "epoch": 1, "protocol": "linear",
               "resumed": True, "val_top1": 40}]
    assert series_rows("r", events) == [
        {"run": "r", "series": "linear_val_top1", "step": 4, "epoch": 1, "t": 2.0, "value": 40}]


# -- plot ----------------------------------------------------------------------------------
def test_plot_writes_an_svg_with_labelled_axes_and_every_run(runs: list[RunDir],
                                                             tmp_path: Path) -> None:
    target = tmp_path / "fig" / "loss.svg"
    out = cli("-o", str(tmp_path), "plot", runs[0].id, runs[1].id, "--metric", "loss",
              "--x", "epoch", "--out", str(target))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"wrote {target}"
    root = ET.parse(target).getroot()
    assert root.tag == f"{SVG}svg"
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {"epoch", "train loss", runs[0].id, runs[1].id} <= texts, texts
    lines = [p for p in root.iter(f"{SVG}path") if "clip-path" in p.attrib]
    assert len(lines) >= 2  # one curve per run (grid lines are paths too)


def test_plot_writes_png_and_pdf_that_parse_back(runs: list[RunDir], tmp_path: Path) -> None:
    from matplotlib.image import imread

    for suffix in ("png", "pdf"):
        target = tmp_path / f"knn.{suffix}"
        out = cli("-o", str(tmp_path), "plot", runs[0].id, "-m", "knn", "--x", "time",
                  "--out", str(target))
        assert out.returncode == 0, out.stderr
    image = imread(tmp_path / "knn.png")
    assert image.shape[0] > 400 and image.shape[1] > 600 and image.shape[2] in (3, 4)
    assert image[..., :3].min() < 0.5 < image[..., :3].max()  # something was drawn
    assert (tmp_path / "knn.pdf").read_bytes().startswith(b"%PDF-")


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "nope"], "--metric nope: no such series in these runs (they have: "
                           "epoch_ips, epoch_loss, epoch_lr, epoch_online_top1, ips, knn, "
                           "linear, linear_test_top1, linear_val_top1, loss, lr, momentum, "
                           "val_knn_top5, val_loss, val_top1, val_top5)"),
    (["--out", "fig.gif"], "fig.gif: unknown figure format '.gif'; use .svg, .png or .pdf"),
    (["--smooth", "1.5"], "<command line>: --smooth: must be in [0, 1) (got 1.5)"),
])
def test_plot_bad_input_is_one_line(runs: list[RunDir], tmp_path: Path, args: list[str],
                                    message: str) -> None:
    base = ["-o", str(tmp_path), "plot", runs[0].id, "--out", "fig.svg"]
    out = cli(*base, *args)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"sslterm: {message}"]


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "fig.svg"], "plot: -o fig.svg: -o is the runs folder; give the figure as "
                        "--out fig.svg"),
    ([], "plot: the figure file is missing: --out FILE (.svg, .png or .pdf); -o is the runs "
         "folder"),
])
def test_plot_without_out_says_which_option_is_the_figure(runs: list[RunDir], tmp_path: Path,
                                                          args: list[str], message: str) -> None:
    """Before: ``plot RUN -o fig.svg``, the usual spelling, answered with argparse's usage
    and "the following arguments are required: --out"."""
    out = cli("-o", str(tmp_path), "plot", runs[0].id, *args)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"sslterm: {message}"]
    assert not (REPO / "fig.svg").exists() and not (tmp_path / "fig.svg").exists()


def test_plot_without_matplotlib_is_one_line_naming_the_install(runs: list[RunDir],
                                                                tmp_path: Path) -> None:
    out = cli("-o", str(tmp_path), "plot", runs[0].id, "--out", str(tmp_path / "f.svg"),
              code="sys.modules['matplotlib'] = None")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "sslterm: plotting needs matplotlib, which is not installed: pip install matplotlib "
        '(in a clone: pip install -e ".[plot]")']


COMMANDS_WITH_OUT = {
    "export": ["export", "{run}", "--format", "csv"],
    "table": ["table", "{run}", "--metrics", "knn"],
    "plot": ["plot", "{run}"],
}


def with_results(run: RunDir) -> RunDir:
    """The run's results.json, which ``table`` reads."""
    run.results.write_text(json.dumps({"run_id": run.id, "final": {"knn": {"val_top1": 40.0}}}))
    return run


@pytest.mark.parametrize("command", COMMANDS_WITH_OUT)
def test_out_makes_its_folder(runs: list[RunDir], tmp_path: Path, command: str) -> None:
    """Before, export (alone of the --out commands) needed the folder to exist."""
    target = tmp_path / "new" / "folder" / ("out.svg" if command == "plot" else "out.txt")
    args = [a.format(run=with_results(runs[0]).id) for a in COMMANDS_WITH_OUT[command]]
    out = cli("-o", str(runs[0].path.parent), *args, "--out", str(target))
    assert out.returncode == 0, out.stderr
    assert target.stat().st_size > 0
    assert os.listdir(target.parent) == [target.name]  # no temp file left beside it


@pytest.mark.parametrize("command", COMMANDS_WITH_OUT)
def test_out_that_cannot_be_written_is_one_line(runs: list[RunDir], tmp_path: Path,
                                                command: str) -> None:
    """A file where the folder should be: before, export, table and plot ended in a
    traceback."""
    blocker = tmp_path / "results"
    blocker.write_text("keep me\n")
    target = blocker / ("fig.svg" if command == "plot" else "out.txt")
    args = [a.format(run=with_results(runs[0]).id) for a in COMMANDS_WITH_OUT[command]]
    out = cli("-o", str(runs[0].path.parent), *args, "--out", str(target))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"sslterm: {target}: {blocker} is a file, not a folder"]
    assert blocker.read_text() == "keep me\n"


def test_time_axis_unit_keeps_numbers_readable() -> None:
    assert time_unit(90) == (1.0, "seconds")
    assert time_unit(600) == (60.0, "minutes")
    assert time_unit(5 * 3600) == (3600.0, "hours")
