"""Safety rules checked on the source's syntax tree (not its text, so comments, strings
and formatting neither hide nor fake a call): no shell anywhere, checkpoints loaded
with ``weights_only=True``, and the web server local unless told otherwise."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sslterm.cli import build_parser

PACKAGE = Path(__file__).resolve().parent.parent / "sslterm"
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput")}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    """``os.system`` -> ("os", "system"); () for anything that is not a plain name chain."""
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return (*base, node.attr) if base else ()
    return ()


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def problems(source: str, name: str = "<src>") -> list[str]:
    """Every breach of the rules in one module's source, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "subprocess", "torch"):
            banned = {b for m, b in SHELL_CALLS if m == node.module}
            banned |= {"load"} if node.module == "torch" else set()
            found += [f"{where}: from {node.module} import {a.name}"
                      for a in node.names if a.name in banned]
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        if func[-2:] in SHELL_CALLS:
            found.append(f"{where}: {'.'.join(func)}()")
        keywords = {k.arg: k.value for k in node.keywords}
        shell = keywords.get("shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{where}: shell= other than False")
        if func[-2:] == ("torch", "load") and not _is_true(keywords.get("weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
    return found


@pytest.mark.parametrize(("source", "count"), [
    ("import subprocess\nsubprocess.run(cmd, shell=True)\n", 1),
    ("subprocess.Popen(cmd, shell=flag)\n", 1),
    ("import os\nos.system('ls')\nos.popen('ls')\n", 2),
    ("from os import system\n", 1),
    ("import torch\ntorch.load(path)\n", 1),
    ("torch.load(path, weights_only=False)\n", 1),
    ("from torch import load\n", 1),
    ("torch.load(path, map_location='cpu', weights_only=True)\n", 0),
    ("subprocess.run(['ls'], shell=False)\nsubprocess.run(['ls'])\n", 0),
    ("s = 'os.system(\"x\")'  # torch.load(p)\n", 0),
])
def test_checker_finds_breaches(source: str, count: int) -> None:
    assert len(problems(source)) == count, problems(source)


def test_package_has_no_shell_and_only_safe_loads() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    found = [p for f in files for p in problems(f.read_text(encoding="utf-8"), str(f))]
    assert found == []


def test_serve_listens_on_localhost_by_default() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).host == "127.0.0.1"
    assert parser.parse_args(["serve", "--host", "0.0.0.0"]).host == "0.0.0.0"


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_resuming_a_run_directory_never_unpickles_code(tmp_path):
    """A run directory may come from elsewhere (a shared disk, a colleague): the pickles
    Accelerate keeps in a checkpoint (RNG states, optimizer) must not run code on resume."""
    import pickle

    import torch

    from sslterm.errors import TrainingError
    from sslterm.profile.load import load_profile
    from sslterm.runs.store import RunDir
    from sslterm.train.engine import Position, Trainer

    profile = load_profile(PACKAGE.parent / "profiles" / "smoke.toml",
                           ["launch.cpu=true", "train.epochs=1"])  # fmt: skip
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    trainer = Trainer(run, profile)
    trainer.setup()
    path = run.path / trainer.save_checkpoint(Position(1, 0, 4), complete_epoch=True)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()  # the payload works: an unsafe load would run it
    marker = tmp_path / "pwned"
    for name in ("random_states_0.pkl", "optimizer.bin"):
        assert (path / name).is_file()
        (path / name).write_bytes(pickle.dumps(_Payload(marker)))
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path / name, weights_only=True)  # refused, as a test of the test
    resumed = Trainer(run, profile)  # a new process's trainer: setup decides the checkpoint
    resumed.setup()
    assert resumed.resume_from is not None and resumed.resume_from[0] == path.name
    with pytest.raises(TrainingError, match=f"checkpoint {path.name} holds more than tensors"):
        resumed.maybe_resume()  # the poisoned optimizer state is refused, loudly
    assert not marker.exists()
