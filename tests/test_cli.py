"""The command line itself: argument order, listing, ``rm``, ``serve`` without its extra
and what a fresh ``pip install -e ".[test]"`` brings (real subprocesses, no training)."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from runhelpers import SMOKE, start_stand_in

from sslterm.runs.store import RunDir, new_run_dir

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LONG_NAME = "a-profile-with-quite-a-long-name-for-narrow-terminals"


def cli(*args: str, cwd: Path = REPO, columns: int = 80, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sslterm ARGS`` with its output piped, as a script or ``| grep`` gets it."""
    env = dict(os.environ, COLUMNS=str(columns), **(env or {}))
    return subprocess.run([sys.executable, "-m", "sslterm", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, input=stdin or "")


def make_run(out: Path, state: str, name: str = LONG_NAME, **status: object) -> RunDir:
    run = new_run_dir(out, name)
    run.profile.write_text(SMOKE.read_text())
    run.update_status(state=state, run_id=run.id, profile=name, created="2026-01-01T00:00:00+00:00",
                      host=socket.gethostname(), **status)
    return run


# -- argument order ------------------------------------------------------------------------
def test_overrides_may_follow_options() -> None:
    """Before: argparse stopped at --detach and refused the override after it."""
    out = cli("run", str(SMOKE), "--detach", "train.epohcs=6")
    assert out.returncode == 2
    assert out.stderr.strip() == ("sslterm: <command line>: train.epohcs: unknown key; "
                                  "did you mean 'train.epochs'?")


def test_set_takes_one_value_and_more_overrides_may_follow() -> None:
    out = cli("profile", "show", str(SMOKE), "--set", "train.epochs=7", "train.seed=11")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^epochs = 7\b", out.stdout, re.M) and re.search(r"^seed = 11\b", out.stdout, re.M)


def test_usage_does_not_call_the_overrides_required() -> None:
    out = cli("run")
    assert out.returncode == 2
    assert "required: profile" in out.stderr and "KEY=VALUE" not in out.stderr.splitlines()[-1]


def test_an_unknown_option_is_still_refused() -> None:
    out = cli("run", str(SMOKE), "--detahc")
    assert out.returncode == 2 and "unrecognized arguments: --detahc" in out.stderr
    assert "sslterm run" in out.stderr  # the command's own usage


# -- runs ----------------------------------------------------------------------------------
def test_output_dir_after_the_command(tmp_path: Path) -> None:
    run = make_run(tmp_path / "elsewhere", "stopped")
    before, after = cli("-o", str(run.path.parent), "runs"), cli("runs", "-o", str(run.path.parent))
    assert after.returncode == 0 and after.stdout == before.stdout and run.id in after.stdout


def test_runs_never_cuts_run_ids_at_80_columns_or_piped(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, s, error="x " * 60) for s in ("stopped", "failed", "finished")]
    out = cli("-o", str(tmp_path), "runs", columns=80)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for run in runs:
        assert any(run.id in line.split() for line in lines), (run.id, out.stdout)


def test_runs_json_has_state_progress_and_final_metrics(tmp_path: Path) -> None:
    done = make_run(tmp_path, "finished")
    final = {"linear_eval": {"test_top1": 41.5}, "knn": {"val_top1": 38.0}}
    done.results.write_text(json.dumps({"run_id": done.id, "final": final}))
    with open(done.events, "w") as fh:
        fh.write(json.dumps({"v": 2, "kind": "run_started", "t": 1.0, "epochs": 3,
                             "steps_per_epoch": 2, "method": "byol"}) + "\n")
        fh.write(json.dumps({"v": 2, "kind": "epoch", "t": 2.0, "epoch": 2, "step": 6}) + "\n")
    queued = make_run(tmp_path, "queued", name="other")
    out = cli("-o", str(tmp_path), "runs", "--json")
    assert out.returncode == 0, out.stderr
    records = {r["id"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert records[done.id]["state"] == "finished" and records[done.id]["final"] == final
    assert (records[done.id]["epoch"], records[done.id]["epochs"]) == (3, 3)
    assert records[queued.id]["state"] == "queued" and records[queued.id]["final"] is None
    # the method: the trainer's run_started, else the frozen profile's
    assert (records[done.id]["method"], records[queued.id]["method"]) == ("byol", "simclr")
    table = cli("-o", str(tmp_path), "runs").stdout.splitlines()
    assert table[0].split()[:6] == ["run", "state", "epoch", "profile", "method", "created"]
    assert {line.split()[0]: line.split()[-2] for line in table[1:]} == {  # no errors
        done.id: "byol", queued.id: "simclr"}


# -- rm ------------------------------------------------------------------------------------
def test_rm_deletes_an_ended_run_only_when_confirmed(tmp_path: Path) -> None:
    run = make_run(tmp_path, "stopped")
    refused = cli("-o", str(tmp_path), "rm", run.id)  # stdin is no terminal: no question
    assert refused.returncode == 2 and "--yes" in refused.stderr and run.path.is_dir()
    out = cli("rm", run.id, "-o", str(tmp_path), "--yes")
    assert out.returncode == 0, out.stderr
    assert not run.path.exists()


def test_rm_refuses_a_running_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "queued")
    proc = start_stand_in(run.path)
    try:
        out = cli("-o", str(tmp_path), "rm", run.id, "--yes")
        assert out.returncode == 2
        assert out.stderr.strip() == f"sslterm: run {run.id} is running; stop it before deleting"
        assert run.path.is_dir()
    finally:
        proc.kill()
        proc.wait()


# -- a fresh install -----------------------------------------------------------------------
def test_serve_without_textual_serve_is_one_line_naming_the_install() -> None:
    code = ("import sys; sys.modules['textual_serve'] = None\n"
            "from sslterm.cli import main; sys.exit(main(['serve']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "sslterm: serve needs textual-serve, which is not installed: pip install textual-serve "
        '(in a clone: pip install -e ".[serve]")']


def _requirement_closure(requirements: list[str]) -> set[str]:
    """Distribution names these requirements install, with their own dependencies."""
    def name(req: str) -> str:
        return re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")

    seen, todo = set(), [name(r) for r in requirements]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        with contextlib.suppress(metadata.PackageNotFoundError):
            todo += [name(r) for r in metadata.requires(dist) or [] if "extra ==" not in r]
    return seen


WITHOUT_TESTS = {"umap"}
"""Optional extras the code does without and no test needs: umap-learn (the [umap] extra,
numba: heavy) for ``sslterm embed --method umap``; without it embed uses PCA."""


@pytest.mark.parametrize("folder", ["sslterm", "tests"])
def test_the_test_extra_brings_everything_the_code_and_tests_import(folder: str) -> None:
    """A fresh `pip install -e ".[test]"` must run every test (textual-serve was missing)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = _requirement_closure(project["dependencies"]
                                     + project["optional-dependencies"]["test"])
    local = {p.stem for p in REPO.rglob("*.py")} | {"sslterm"}
    dists = metadata.packages_distributions()
    missing = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                if top in WITHOUT_TESTS:
                    continue
                names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not names & installed:
                    missing.add(f"{top} ({path.relative_to(REPO)})")
    assert not missing, sorted(missing)


# -- plot / export / sweep stay light --------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["runs"], ["plot", "--help"], ["sweep", "--show"],
                                  ["export", "nope"]])
def test_light_commands_import_neither_torch_nor_matplotlib(argv: list[str], tmp_path: Path) -> None:
    """plot/export/sweep load their libraries lazily: the rest of the CLI starts as fast."""
    code = ("import sys\nfrom sslterm.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY=' + ','.join(sorted(m for m in ('torch', 'matplotlib', 'timm') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, "-o", str(tmp_path), *argv], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[-1] == "HEAVY=", out.stderr
