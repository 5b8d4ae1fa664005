"""What the command line says besides errors: the methods it names, the order of
``sslterm runs``, counts in words, and the note that a run is all warmup (real ``sslterm``
subprocesses; ``run`` in this process with the launch stubbed, so nothing trains)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from runhelpers import SMOKE

from sslterm import cli
from sslterm.profile.schema import METHOD_SECTIONS
from sslterm.runs import launcher
from sslterm.runs.store import RunDir

REPO = Path(__file__).resolve().parents[1]
NOTE = ("note: train.warmup_epochs (10) >= train.epochs (4): the whole run is warmup; the lr "
        "never decays")


def sslterm(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))


def default_warmup_profile(tmp_path: Path) -> Path:
    """smoke.toml without its warmup_epochs line: the default (10) applies."""
    text = "".join(line for line in SMOKE.read_text().splitlines(keepends=True)
                   if not line.startswith("warmup_epochs"))
    path = tmp_path / "smoke-default-warmup.toml"
    path.write_text(text)
    return path


def test_help_names_every_method():
    """Before: "(SimCLR)" alone."""
    out = sslterm("--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split()).lower().replace(" ", "")
    missing = [m for m in METHOD_SECTIONS if m not in text]
    assert not missing, out.stdout


def test_runs_lists_the_newest_run_first_as_the_app_does(tmp_path):
    """Before: sorted by name. The ids' names run against their creation order here."""
    for name, created in (("aaa", "2026-01-03T00:00:00+00:00"), ("bbb", "2026-01-01T00:00:00+00:00"),
                          ("ccc", "2026-01-02T00:00:00+00:00")):
        run = RunDir(tmp_path / f"{name}-20260101-000000")
        run.path.mkdir()
        run.update_status(state="finished", run_id=run.id, profile=name, created=created,
                          host=socket.gethostname())
    newest = ["aaa-20260101-000000", "ccc-20260101-000000", "bbb-20260101-000000"]
    table = sslterm("-o", str(tmp_path), "runs")
    assert table.returncode == 0, table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == newest
    listed = sslterm("-o", str(tmp_path), "runs", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == newest


def test_validate_says_in_one_line_when_the_whole_run_is_warmup(tmp_path):
    profile = default_warmup_profile(tmp_path)
    out = sslterm("profile", "validate", str(profile), "train.epochs=4")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [NOTE]
    assert out.stdout.rstrip().endswith("4 epochs)")
    decays = sslterm("profile", "validate", str(profile), "train.epochs=11")
    assert decays.returncode == 0 and decays.stderr == ""


def test_validate_counts_one_epoch_in_the_singular(tmp_path):
    """Before: "1 epochs"; a warmup written as long as the run is noted too."""
    out = sslterm("profile", "validate", str(SMOKE), "train.epochs=1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith(", 1 epoch)")
    assert out.stderr.splitlines() == [
        "note: train.warmup_epochs (1) >= train.epochs (1): the whole run is warmup; the lr "
        "never decays"]


@pytest.mark.parametrize(("epochs", "noted"), [(4, True), (12, False)])
def test_run_says_at_launch_when_the_whole_run_is_warmup(tmp_path, monkeypatch, capsys,
                                                        epochs, noted):
    """On stderr: ``run --detach`` prints the run id alone on stdout."""
    started = RunDir(tmp_path / "runs" / "smoke-20260101-000000")
    monkeypatch.setattr(launcher, "start_run", lambda *a, **k: started)
    profile = default_warmup_profile(tmp_path)
    assert cli.main(["run", str(profile), f"train.epochs={epochs}", "--detach"]) == 0
    out = capsys.readouterr()
    assert out.out == f"{started.id}\n"
    assert out.err.splitlines() == ([NOTE.replace("(4)", f"({epochs})")] if noted else [])
