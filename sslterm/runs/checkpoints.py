"""Finding, committing and pruning checkpoints on disk (no torch here).

A checkpoint is an ``accelerate save_state`` folder written under a temporary
name, completed with ``state.json`` and a ``COMPLETE`` marker, then renamed
into place. Only renamed folders holding ``COMPLETE`` count, so a checkpoint
torn by a kill or a full disk is never picked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def checkpoint_name(global_step: int) -> str:
    return f"step-{global_step:09d}"


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Complete checkpoints, oldest first, with their ``state.json``."""
    found = []
    if not ckpt_dir.is_dir():
        return found
    for path in ckpt_dir.iterdir():
        if path.name.startswith(TMP_PREFIX) or not (path / "COMPLETE").exists():
            continue
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError):
            continue
        found.append((path, state))
    return sorted(found, key=lambda item: item[1].get("global_step", -1))


def newest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    found = complete_checkpoints(ckpt_dir)
    return found[-1] if found else None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path, state: dict[str, Any]) -> None:
    """Mark ``tmp`` complete and rename it to ``final`` (atomic on one filesystem)."""
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    with open(tmp / "COMPLETE", "w") as fh:
        fh.write("ok\n")
        fh.flush()
        os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def prune(ckpt_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints and any torn leftovers."""
    removed = []
    for path, _ in complete_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def remove_partial(ckpt_dir: Path) -> None:
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            if path.name.startswith(TMP_PREFIX) or (
                path.is_dir() and not (path / "COMPLETE").exists()
            ):
                shutil.rmtree(path, ignore_errors=True)


def settings_conflict(name: str, saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """One line on the first setting that shapes a checkpoint's tensors and differs now
    (None when all match; a checkpoint from before settings were recorded has none): such
    a checkpoint cannot be loaded, and resume must say so before training starts."""
    for key, old in saved.items():
        if key in now and now[key] != old:
            hint = f"resume with {key}={old}" if "." in key else "resume with its settings"
            return (f"{key}: checkpoint {name} was taken with {old!r}, not {now[key]!r}; "
                    f"{hint} or start a new run")
    return None
