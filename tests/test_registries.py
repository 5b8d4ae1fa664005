"""The dataset and method registries: no import cycles, complete from any first import,
and unknown names answered with the closest known one."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sslterm.data.registry import build_splits
from sslterm.errors import UserError
from sslterm.methods.registry import get_method
from sslterm.profile.schema import DataConfig

PACKAGE = Path(__file__).resolve().parents[1] / "sslterm"
REGISTRIES = {"data": "DATASETS", "methods": "METHODS"}


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` anywhere in the file names (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("package", sorted(REGISTRIES))
def test_a_registry_never_imports_its_members(package):
    members = {f"sslterm.{package}.{p.stem}" for p in (PACKAGE / package).glob("*.py")
               if "@register_" in p.read_text() or "register_dataset(" in p.read_text()}
    members.discard(f"sslterm.{package}.registry")
    assert members, "the built-in members register themselves"
    assert not imported_modules(PACKAGE / package / "registry.py") & members


FIRST_IMPORT = r"""
import importlib, json, sys
found = {}
for first in sys.argv[1:]:
    for name in [m for m in sys.modules if m == "sslterm" or m.startswith("sslterm.")]:
        del sys.modules[name]  # a fresh sslterm each time; torch stays loaded (speed)
    importlib.import_module(first)
    package = first.split(".")[1]
    registry = sys.modules[f"sslterm.{package}.registry"]
    found[first] = sorted(getattr(registry, {"data": "DATASETS", "methods": "METHODS"}[package]))
print(json.dumps(found))
"""


def test_importing_any_module_first_fills_its_registry():
    firsts = ["sslterm.data.registry", "sslterm.data.subsets", "sslterm.data.datasets",
              "sslterm.methods.registry", "sslterm.methods.simclr", "sslterm.methods.losses"]
    done = subprocess.run([sys.executable, "-c", FIRST_IMPORT, *firsts], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for first in firsts:
        wanted = "simclr" if ".methods." in first else "imagenet100"
        assert wanted in found[first], (first, found[first])


def test_unknown_names_get_the_closest_known_one(tmp_path):
    with pytest.raises(UserError, match=r"^unknown method 'simclt'; did you mean 'simclr'\?$"):
        get_method("simclt")
    cfg = DataConfig(root=str(tmp_path)).model_copy(update={"dataset": "cifar11"})
    with pytest.raises(UserError, match=r"^unknown dataset 'cifar11'; did you mean 'cifar10'\?$"):
        build_splits(cfg, seed=0)
