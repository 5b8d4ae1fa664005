"""The headless CLI's light commands and the TUI must start without importing torch, and
imports point down the layers only (docs: ARCHITECTURE.md, "Layers")."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sslterm

CHECK = """
import sys
{code}
heavy = sorted(m for m in ("torch", "timm", "torchvision", "accelerate") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("code", [
    "from sslterm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from sslterm.cli import main\nmain(['runs'])",
    "from sslterm.cli import main\nmain(['profile', 'show', 'profiles/smoke.toml'])",
    "import sslterm.runs.launcher, sslterm.runs.follow, sslterm.runs.supervise,"
    " sslterm.runs.warmstart",
])
def test_no_torch(code):
    out = subprocess.run([sys.executable, "-c", CHECK.format(code=code)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.splitlines()[-1] == "HEAVY="


PACKAGE = Path(sslterm.__file__).parent
# Top to bottom: a module may import its own layer and the layers below it, never one above.
# This is the order the code keeps, which departs from ARCHITECTURE.md's picture in two
# places. The run store (runs) sits *below* train: the trainer writes the run directory
# through it, and nothing in runs imports train (the launcher starts it as a process), though
# runs' pre-launch checks may import data and models. profile sits at the bottom: it is the
# schema every layer is configured by (data, methods, train and eval import it) and imports
# nothing but errors. eval (features, probes, kNN) is used by train and imports no model,
# method or data code; the `features` command, which builds a run's model as train does,
# lives above train in commands/. Lazy (in-function) and TYPE_CHECKING imports count too:
# they keep torch off the light paths, not the direction of a dependency.
LAYERS = [
    {"__main__", "cli"},
    {"tui"},
    {"report"},
    {"commands"},
    {"train"},
    {"runs"},
    {"methods"},
    {"models"},
    {"data"},
    {"eval"},
    {"profile"},
    {"__init__", "errors", "files", "process"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def layer_of(module: str) -> str:
    """The layer of a module: its first part below ``sslterm`` (``sslterm`` itself:
    ``__init__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every sslterm module ``path`` imports, wherever the import stands;
    ``from sslterm import x`` names the submodule x where there is one."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                file = PACKAGE.parent / sub.replace(".", "/")
                is_module = file.is_dir() or file.with_suffix(".py").is_file()
                found.append((node.lineno, sub if is_module else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "sslterm"]


def test_every_layer_is_placed():
    """A new package or top-level module must be given its place in LAYERS."""
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py") or (p / "__init__.py").is_file()}
    assert tops == set(RANK)


def test_imports_point_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for line, target in imported_modules(path):
            if RANK[layer_of(target)] < RANK[layer_of(module)]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} "
                              f"({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)
