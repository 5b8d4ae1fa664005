"""The real `sslterm` app in a real terminal (tmux), driven by keys as over SSH."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tuihelpers import make_runs

REPO = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Terminal:
    """One tmux session on a private server socket (never the user's tmux)."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"sslterm-test-{os.getpid()}"
        self.env = env
        self._tmux("new-session", "-d", "-s", "app", "-x", "120", "-y", "36",
                   "-c", str(cwd), shlex.join(command))  # fmt: skip

    def _tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True,
                              text=True, env=self.env, timeout=30)  # fmt: skip

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "app").stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "app", *keys)

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", "app").returncode == 0

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def wait_gone(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text in self.screen():
            assert time.monotonic() < deadline, f"{text!r} stayed; screen:\n{self.screen()}"
            time.sleep(0.2)

    def close(self) -> None:
        self._tmux("kill-server")


def test_app_in_a_real_terminal(tmp_path):
    make_runs(tmp_path / "runs")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TERM="xterm-256color")  # fmt: skip
    env.pop("NO_COLOR", None)
    term = Terminal([sys.executable, "-m", "sslterm", "-o", "runs"], tmp_path, env)
    try:
        # the runs (at 80 columns their ids are elided: the table shows its numbers)
        screen = term.wait_for("finished")
        assert "1 Runs" in screen and "s Stop" in screen  # views and keys on screen
        assert "failed" in screen and "stopped" in screen  # all three runs
        term.keys("Down")
        term.wait_for("CUDA out of memory")
        term.keys("Down")
        term.wait_for("cifar10-20240501-120000 · resnet18")  # highlighted
        term.keys("Enter")  # the run's details
        screen = term.wait_for("final results (from checkpoints/epoch-0009-step-000200)")
        assert "reproduce: sslterm run runs/cifar10-20240501-120000/profile.toml" in screen
        assert "epoch-0009-step-000200  3.0 MiB  ← final results" in screen
        term.keys("Escape")
        term.wait_gone("final results (from")
        term.keys("2")
        term.wait_for("TOML to be")
        term.keys("C-o")
        term.wait_for("Open a profile")
        term.keys("Escape")  # alone: Escape then a key at once would read as alt+key
        term.wait_gone("Open a profile")
        term.keys("3")
        term.wait_for("runs (space: pick)")
        term.keys("5")
        term.wait_for("CPU")
        term.keys("1")
        term.wait_for("cifar10-20240501-120000 · resnet18")  # the highlighted run, in full
        term.keys("C-q")
        deadline = time.monotonic() + 30
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), "ctrl+q did not quit"
    finally:
        term.close()
