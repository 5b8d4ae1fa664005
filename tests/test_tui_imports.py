"""The app (every view mounted) and its helpers never import torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tuihelpers import make_runs

REPO = Path(__file__).resolve().parents[1]

CODE = """
import asyncio, sys
import sslterm.cli, sslterm.runs.launcher, sslterm.runs.queue, sslterm.runs.summary
import sslterm.profile.edit, sslterm.tui.serve, sslterm.tui.system
from sslterm.tui.app import SSLTermApp

async def main():
    app = SSLTermApp(sys.argv[1], sys.argv[2], poll_interval=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.polls < 2:
            await pilot.pause(0.05)
        for mode in ("composer", "compare", "queue", "system", "runs"):
            await app.switch_mode(mode)
            await pilot.pause(0.2)

asyncio.run(main())
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("torch", "torchvision", "timm", "accelerate", "safetensors"))
print("HEAVY", heavy)
"""


def test_app_never_imports_torch(tmp_path):
    make_runs(tmp_path / "runs")
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(tmp_path / "runs"), str(REPO / "profiles")],
        capture_output=True, text=True, cwd=REPO, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout
