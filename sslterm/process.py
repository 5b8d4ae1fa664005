"""The end of a process that imported torch."""

from __future__ import annotations

import gc
import sys
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """``sys.exit(code)`` without the interpreter's final garbage collections over what the
    process imported: torch's, torchvision's and sympy's object graphs take seconds to
    collect, which whoever waits for the process (the supervisor, ``sslterm run``, the app)
    waits too. For a process's last statement only: what it writes is flushed and closed by
    then, and exit handlers still run."""
    gc.freeze()
    sys.exit(code)
