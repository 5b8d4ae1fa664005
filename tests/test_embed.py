"""``sslterm embed``: exported features projected to 2-D (PCA without umap-learn), saved
beside them and drawn into figures that parse back with one point per sampled feature; the
run's detail view draws the projection."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from tuihelpers import T0, wait_until, write_run

from sslterm.eval.embed import pca_2d
from sslterm.runs.store import RunDir

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
RUN_ID = "embed-20240501-120000"
PER_CLASS, CLASSES = 30, 3


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))


@pytest.fixture
def run_with_features(tmp_path: Path) -> RunDir:
    """A finished run whose export holds three well separated classes (test: 90 features)."""
    import torch

    from sslterm.eval.export import save_features

    run = RunDir(write_run(tmp_path / "runs", RUN_ID, state="finished", start=T0))
    gen = torch.Generator().manual_seed(0)
    splits = {}
    for split, n in (("train", 10), ("test", PER_CLASS)):
        labels = torch.arange(CLASSES).repeat_interleave(n)
        centres = torch.eye(CLASSES, 16) * 10
        splits[split] = (centres[labels] + torch.randn(len(labels), 16, generator=gen), labels)
    save_features(run.features, splits, {"dataset": "synthetic"})
    return run


def test_pca_matches_numpys_principal_components() -> None:
    x = np.random.default_rng(1).normal(size=(50, 6)) * [5, 3, 1, 1, 1, 1]
    got = pca_2d(x)
    centred = x - x.mean(axis=0)
    cov_vals, cov_vecs = np.linalg.eigh(np.cov(centred.T))
    top = cov_vecs[:, ::-1][:, :2]
    assert np.allclose(np.abs(got), np.abs(centred @ top), atol=1e-8)


def test_embed_writes_the_projection_and_figures_with_every_point(run_with_features: RunDir,
                                                                  tmp_path: Path) -> None:
    run = run_with_features
    out = run.path.parent
    svg = tmp_path / "figs" / "embed.svg"
    done = cli("-o", str(out), "embed", run.id, "--method", "pca", "--out", str(svg))
    assert done.returncode == 0, done.stderr
    assert "PCA of 90 of 90 test features, 3 classes" in done.stdout
    saved = json.loads((run.features / "embedding.json").read_text())
    assert (saved["method"], saved["split"], len(saved["points"])) == ("pca", "test", 90)
    # the three classes stay apart: each class's points are nearer their own centre
    xy, labels = np.array(saved["points"]), np.array(saved["labels"])
    centres = np.stack([xy[labels == c].mean(axis=0) for c in range(CLASSES)])
    nearest = np.linalg.norm(xy[:, None] - centres[None], axis=2).argmin(axis=1)
    assert (nearest == labels).mean() > 0.95
    root = ET.parse(svg).getroot()
    points = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "points")
    assert len(list(points.iter(f"{SVG}use"))) == 90
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {"class 0", "class 1", "class 2", "PCA 1", "PCA 2"} <= texts

    png = tmp_path / "embed.png"
    done = cli("-o", str(out), "embed", run.id, "--split", "train", "--max-points", "20",
               "--out", str(png))
    assert done.returncode == 0, done.stderr
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len(json.loads((run.features / "embedding.json").read_text())["points"]) == 20

    for args, message in (
        (["--split", "val"], "--split val: not in"),
        (["--out", "x.gif"], "x.gif: unknown figure format '.gif'"),
        (["--method", "umap"], "--method umap needs umap-learn, which is not installed"),
    ):
        if args[0] == "--method" and importlib.util.find_spec("umap"):
            continue  # installed here: umap works
        bad = cli("-o", str(out), "embed", run.id, *args)
        assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
        assert message in bad.stderr
    (run.features / "features.safetensors").unlink()
    bad = cli("-o", str(out), "embed", run.id)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        f"sslterm: run {run.id} has no exported features; run: sslterm features {run.id}"]


@pytest.mark.anyio
@pytest.mark.usefixtures("utc")
async def test_the_detail_view_draws_the_embedding(run_with_features: RunDir,
                                                   profiles_dir: Path) -> None:
    from textual_plotext import PlotextPlot

    from sslterm.tui.app import SSLTermApp
    from sslterm.tui.widgets.runs_table import RunsTable

    app = SSLTermApp(run_with_features.path.parent, profiles_dir, poll_interval=0.2,
                     env_check_delay=None)
    async with app.run_test(size=(120, 50)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.selected == RUN_ID)  # the row, not just the index
        await pilot.press("enter")
        await wait_until(pilot, lambda: getattr(app.screen, "details", None) is not None)
        embedding = app.screen.details.embedding
        assert embedding is not None and len(embedding.points) == CLASSES * PER_CLASS
        plot = app.screen.query_one("#detail-embed", PlotextPlot)
        assert plot.display
        await wait_until(pilot, lambda: "class 2" in str(plot.render()))
