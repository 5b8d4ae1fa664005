"""Every broken profile in tests/bad_profiles/ gets one clear line and exit code 2.

Each file's first line is ``# expect: {file}:LINE: key: message``; the test checks
that ``sslterm run FILE --detach`` and ``sslterm profile validate FILE`` both print
exactly one line containing it (``{file}`` is the path given), exit with 2, show no
traceback and create no run directory. The cases run in ONE Python process calling
``sslterm.cli.main`` (torch and timm import once), with its cwd an empty folder, so
relative data paths in the profiles point at nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "bad_profiles").glob("*.toml"))
PREFIX = "# expect: "

# Runs the real CLI in-process per case. A profile that wrongly passes must not start
# training: the spawn is replaced by an error, which then shows up as a traceback.
RUNNER = r"""
import contextlib, io, json, sys, traceback
from sslterm import cli
from sslterm.runs import launcher

def refuse_spawn(run, profile):
    raise AssertionError(f"a bad profile was started: {run.path}")

launcher._spawn = refuse_spawn
results = {}
for path, out in json.loads(sys.argv[1]):
    for name, argv in (("run", ["--output-dir", out, "run", path, "--detach"]),
                       ("validate", ["profile", "validate", path])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code
            except BaseException:
                traceback.print_exc()
                code = None
        results.setdefault(path, {})[name] = {"code": code, "stderr": err.getvalue()}
with open(sys.argv[2], "w") as fh:
    json.dump(results, fh)
"""


def expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    assert first.startswith(PREFIX), f"{path.name}: first line must be '{PREFIX}...'"
    return first[len(PREFIX):].replace("{file}", str(path))


def out_dir(work: Path, path: Path) -> Path:
    return work / "runs" / path.stem


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("bad-profiles")
    cwd = work / "cwd"
    cwd.mkdir()
    cases = [[str(p), str(out_dir(work, p))] for p in CORPUS]
    result = work / "results.json"
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cases), str(result)],
                          cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(cwd.iterdir()), "a bad profile left files in the working directory"
    return work, json.loads(result.read_text())


def test_corpus_is_large_and_annotated() -> None:
    assert len(CORPUS) >= 30
    for path in CORPUS:
        assert str(path) in expected(path), f"{path.name}: the expectation must name {{file}}"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_profile_gives_one_line(path: Path, outcomes: tuple[Path, dict]) -> None:
    work, results = outcomes
    want = expected(path)
    for command in ("run", "validate"):
        got = results[str(path)][command]
        assert "Traceback" not in got["stderr"], got["stderr"]
        lines = got["stderr"].splitlines()
        assert len(lines) == 1, f"{command}: {got['stderr']!r}"
        assert lines[0].startswith(f"sslterm: {path}"), lines[0]
        assert want in lines[0], f"{command}: {lines[0]!r} lacks {want!r}"
        assert got["code"] == 2, f"{command}: exit {got['code']}"
    assert results[str(path)]["run"]["stderr"] == results[str(path)]["validate"]["stderr"]
    runs = out_dir(work, path)
    assert not runs.exists() or not any(runs.iterdir()), "a run directory was created"


@pytest.mark.parametrize("name", ["syntax-duplicate-key", "unknown-key-temperature"])
def test_real_command_line(name: str, tmp_path: Path) -> None:
    """The installed entry point behaves as the in-process runner shows."""
    path = ROOT / "tests" / "bad_profiles" / f"{name}.toml"
    done = subprocess.run(
        [sys.executable, "-m", "sslterm", "--output-dir", str(tmp_path / "runs"), "run",
         str(path), "--detach"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"sslterm: {expected(path)}"]
    assert not (tmp_path / "runs").exists()
