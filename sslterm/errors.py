"""Errors a user can fix: shown as one line, exit code 2, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input (profile, path, run id, data on disk). The message is the whole story."""

    exit_code = 2


class ProfileError(UserError):
    """A profile problem, located by file, line and key.

    The message is the first problem found; ``also`` holds the others found in the
    same pass (the CLI prints one line, the composer marks every field).
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        key: str | None,
        message: str,
        also: tuple[ProfileError, ...] = (),
    ) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        self.also = also
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    @property
    def problems(self) -> tuple[ProfileError, ...]:
        return (self, *self.also)

    def with_path(self, path: str) -> ProfileError:
        """The same problems, named as in ``path`` (a temporary copy's errors, shown
        under the file the user edits)."""
        also = tuple(p.with_path(path) for p in self.also)
        return ProfileError(path, self.line, self.key, self.message, also)


class TrainingError(Exception):
    """A run-ending problem that is not a bug (non-finite loss, bad resume): the trainer
    records its message alone, without a traceback."""


class StopRun(Exception):
    """Raised on every rank of a run once they agreed on a graceful stop."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """The message for a name missing from a registry: the closest known one, else all."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown {kind} {name!r}; did you mean {close[0]!r}?"
    return f"unknown {kind} {name!r}; known: {', '.join(known)}"
