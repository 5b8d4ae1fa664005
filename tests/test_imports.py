"""The headless CLI's light commands and the TUI must start without importing torch."""

import subprocess
import sys

import pytest

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
    "import sslterm.runs.launcher, sslterm.runs.follow, sslterm.runs.supervise",
])
def test_no_torch(code):
    out = subprocess.run([sys.executable, "-c", CHECK.format(code=code)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.splitlines()[-1] == "HEAVY="
