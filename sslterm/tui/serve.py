"""``sslterm serve``: the same app in a browser, through textual-serve.

textual-serve runs the app as a subprocess per browser tab, so the command
below is what each tab gets. It binds to 127.0.0.1 unless told otherwise:
the app can start and kill runs, so exposing it is an explicit choice.
"""

from __future__ import annotations

import shlex
import sys


def app_command(output_dir: str = "./runs", profiles_dir: str = "profiles") -> str:
    """The shell command line textual-serve runs (values quoted; nothing else reaches a shell)."""
    parts = [sys.executable, "-m", "sslterm.tui", "--output-dir", output_dir]
    parts += ["--profiles-dir", profiles_dir]
    return shlex.join(parts)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    output_dir: str = "./runs",
    profiles_dir: str = "profiles",
) -> int:
    """Serve until interrupted; returns 0."""
    from textual_serve.server import Server

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"sslterm serve: listening on {host}:{port}, reachable from other machines; "
            "anyone who can connect can control your runs",
            file=sys.stderr,
        )
    Server(app_command(output_dir, profiles_dir), host=host, port=port, title="sslterm").serve()
    return 0
