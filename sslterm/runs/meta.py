"""A run's label, tags and note: what a researcher calls a run, kept in ``meta.json`` in
the run directory (never in the frozen profile, which says how the run was trained and
stays as it was). Written atomically; editable while the run lives (the trainer never
reads it).

``meta.json``: ``{"label": "baseline", "tags": ["ablation", "lr"], "note": "..."}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sslterm.errors import UserError
from sslterm.files import atomic_write_text
from sslterm.runs.store import RunDir

LABEL_MAX = 80
NOTE_MAX = 4000
_TAG = re.compile(r"[^\s,=]{1,40}")


@dataclass(frozen=True)
class RunMeta:
    label: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "tags": list(self.tags), "note": self.note}

    def __bool__(self) -> bool:
        return bool(self.label or self.tags or self.note)


def check_label(label: str, where: str = "--label") -> str:
    """One line of at most :data:`LABEL_MAX` characters (legends and table cells)."""
    label = label.strip()
    if "\n" in label or "\r" in label:
        raise UserError(f"{where}: a label is one line")
    if len(label) > LABEL_MAX:
        raise UserError(f"{where}: at most {LABEL_MAX} characters (got {len(label)})")
    return label


def check_tags(tags: Iterable[str], where: str = "--tag") -> tuple[str, ...]:
    """Tags as given, without repeats; each one word (no spaces, commas or ``=``, which the
    runs filter reads as syntax)."""
    out: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if not _TAG.fullmatch(tag):
            raise UserError(f"{where} {tag!r}: a tag is one word of at most 40 characters, "
                            "without spaces, commas or '='")
        if tag not in out:
            out.append(tag)
    return tuple(out)


def check_note(note: str, where: str = "--note") -> str:
    if len(note) > NOTE_MAX:
        raise UserError(f"{where}: at most {NOTE_MAX} characters (got {len(note)})")
    return note.strip()


def make_meta(label: str = "", tags: Sequence[str] = (), note: str = "") -> RunMeta:
    """Checked metadata from the launch options (a bad value is a one-line UserError)."""
    return RunMeta(check_label(label), check_tags(tags), check_note(note))


def read_meta(run: RunDir) -> RunMeta:
    """The run's metadata; empty when it has none (or the file is not ours)."""
    try:
        data = json.loads(run.meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RunMeta()
    return meta_from_json(data)


def meta_from_json(data: object) -> RunMeta:
    """``meta.json``'s object (anything else: no metadata)."""
    if not isinstance(data, dict):
        return RunMeta()
    tags = data.get("tags")
    return RunMeta(
        str(data.get("label") or ""),
        tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        str(data.get("note") or ""),
    )


def write_meta(run: RunDir, meta: RunMeta) -> None:
    atomic_write_text(run.meta_file, json.dumps(meta.to_json(), indent=2) + "\n")


def edit_meta(
    run: RunDir,
    *,
    label: str | None = None,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    tags: Sequence[str] | None = None,
    note: str | None = None,
) -> RunMeta:
    """Change what is given (None: keep), check it all first, write once. ``tags`` replaces
    the tags; ``add`` and ``remove`` edit them."""
    old = read_meta(run)
    new_label = old.label if label is None else check_label(label)
    new_tags = list(old.tags if tags is None else check_tags(tags))
    new_tags += [t for t in check_tags(add) if t not in new_tags]
    gone = set(check_tags(remove, "--untag"))
    new_note = old.note if note is None else check_note(note)
    meta = RunMeta(new_label, tuple(t for t in new_tags if t not in gone), new_note)
    if meta != old:
        write_meta(run, meta)
    return meta
