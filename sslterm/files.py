"""Whole-file writes that a crash cannot tear: every file sslterm replaces (run status,
profiles, results, caches, figures, embeddings, queue items) goes through here.

It sits in the bottom layer, free of torch, so the app, the run store, the data cache and
eval share one implementation. Files the user names (``--out``) go through
:func:`write_output`."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sslterm.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a new file beside ``path``, fsync it, then rename it over ``path``.

    Readers see the old file or the new one, never half of either. A file that exists keeps
    its permissions (a profile made group-writable stays so); a new one gets the umask's, as
    ``open`` would give it. The temp name is unique per call, so two writers of one file
    (a trainer and its supervisor) never share a temp file. A symlink stays a symlink: the
    file it points to is the one replaced (a profile linked from a shared folder stays linked)."""
    path = Path(os.path.realpath(path))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(fh.fileno(), path.stat().st_mode & 0o7777)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_output(path: str | Path, data: bytes | str) -> Path:
    """Write a file the user named (``--out``): its folder is made, the write is atomic, and a
    path that cannot be written is one line naming it, not a traceback."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
    except FileExistsError as exc:  # mkdir met a file where a folder must be
        raise UserError(f"{path}: {exc.filename} is a file, not a folder") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    return path
