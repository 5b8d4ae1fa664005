"""The launcher's environment check (data paths, encoder) for the composer, in a child
process: it imports torch and timm, which the app never does.

The child runs :func:`sslterm.runs.launcher.check_profile_environment`, so the composer
marks the same key with the same message a launch would. It never downloads: with
``data.download = true`` files that are missing are fine (the launch fetches them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sslterm.errors import ProfileError, UserError

CHECK_TIMEOUT = 300.0


def check_environment(
    text: str,
    shown: str,
    cancelled: Callable[[], bool] = lambda: False,
    timeout: float = CHECK_TIMEOUT,
) -> ProfileError | None:
    """Check the profile ``text`` (errors name it ``shown``); None when it would launch,
    or when ``cancelled()`` turned true first (the child is killed: a newer check or the
    app's exit need not wait for it)."""
    with tempfile.TemporaryDirectory(prefix="sslterm-check-") as tmp:
        path = Path(tmp) / "profile.toml"
        path.write_text(text, encoding="utf-8")
        out = _child_output([sys.executable, "-m", "sslterm.tui.checks", str(path)],
                            cancelled, timeout)  # fmt: skip
    if out is None:
        return None
    stdout, stderr = out
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return ProfileError(shown, None, None, f"could not check data paths and encoder: {tail}")
    result = json.loads(lines[-1])
    if result.get("ok"):
        return None
    return ProfileError(shown, result.get("line"), result.get("key"), result["message"])


def _child_output(
    cmd: list[str], cancelled: Callable[[], bool], timeout: float
) -> tuple[str, str] | None:
    """(stdout, stderr) of ``cmd``; None when cancelled or past ``timeout`` (killed)."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        while True:
            try:
                return proc.communicate(timeout=0.2)
            except subprocess.TimeoutExpired:
                if cancelled() or time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    return None


def _problem(exc: UserError) -> dict[str, object]:
    if isinstance(exc, ProfileError):
        return {"line": exc.line, "key": exc.key, "message": exc.message}
    return {"line": None, "key": None, "message": str(exc)}


def main(argv: Sequence[str] | None = None) -> int:
    """Child side: print one JSON line, ``{"ok": true}`` or the problem."""
    from sslterm.profile.load import load_profile
    from sslterm.runs.launcher import check_profile_environment

    path = (sys.argv[1:] if argv is None else argv)[0]
    may_download = False
    try:
        profile = load_profile(path)
        may_download = profile.data.download
        offline = profile.data.model_copy(update={"download": False})
        check_profile_environment(profile.model_copy(update={"data": offline}), path)
    except UserError as exc:
        # the data check's message for missing files names the switch that fetches them
        if not (may_download and "data.download" in str(exc)):
            print(json.dumps(_problem(exc)), flush=True)
            return 0
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    from sslterm.process import exit_process

    exit_process(main())
