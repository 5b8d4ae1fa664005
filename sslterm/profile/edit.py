"""Editing profile files without losing what the user wrote.

The composer edits a tomlkit document, not a dict, so saving keeps comments,
key order and layout; only the keys the user touched change. This module is
UI-free: it also describes the schema as a flat list of fields (what a form
needs) and finds the keys in which several profiles differ (for compare).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel
from tomlkit.exceptions import ParseError
from tomlkit.items import Item
from tomlkit.toml_document import TOMLDocument

from sslterm.errors import ProfileError
from sslterm.files import atomic_write_text
from sslterm.profile.schema import LEGACY_MODEL_KEYS, Profile

FieldKind = Literal["bool", "int", "float", "str", "choice", "pair", "list"]
_MISSING = object()


@dataclass(frozen=True)
class FieldSpec:
    """One profile field as a form shows it."""

    key: str
    kind: FieldKind
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    limits: str = ""

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]


# -- documents ---------------------------------------------------------------------------
def parse_document(text: str, path: str = "<profile>") -> TOMLDocument:
    """Parse TOML keeping its layout; a syntax error is a ProfileError with the line."""
    try:
        return tomlkit.parse(text)
    except ParseError as err:
        raise ProfileError(path, err.line, None, f"TOML syntax error: {err}") from None


def load_document(path: str | Path) -> TOMLDocument:
    return parse_document(Path(path).read_text(encoding="utf-8"), str(path))


def get_value(doc: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The plain Python value at a dotted key, or ``default`` when it is not set."""
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node.unwrap() if isinstance(node, Item) else node


def set_value(doc: TOMLDocument, key: str, value: Any) -> None:
    """Set a dotted key, creating tables as needed; ``None`` removes the key so the
    schema default applies. The item's own comment stays on its line."""
    *parents, leaf = key.split(".")
    node: Any = doc
    for part in parents:
        if part not in node:
            if value is None:
                return
            node[part] = tomlkit.table()
        node = node[part]
    if value is None:
        if leaf in node:
            del node[leaf]
        return
    if isinstance(value, tuple):
        value = list(value)
    if get_value(node, leaf, _MISSING) == value and type(get_value(node, leaf)) is type(value):
        return  # unchanged: keep the user's spelling (1e-6 vs 0.000001)
    node[leaf] = value


def move_legacy_keys(doc: TOMLDocument) -> list[str]:
    """Move the SimCLR keys a profile made before the method sections holds in [model] to
    [simclr] (their comments go along), so a form shows them where the schema has them.
    A key set in both places stays, for validation to report. Returns the keys moved."""
    model = doc.get("model")
    if not isinstance(model, Mapping):
        return []
    moved = [k for k in LEGACY_MODEL_KEYS
             if k in model and get_value(doc, f"simclr.{k}", _MISSING) is _MISSING]
    for key in moved:
        item = model.item(key)
        model.remove(key)
        doc.setdefault("simclr", tomlkit.table()).add(key, item)
    return [f"model.{k}" for k in moved]


def dumps(doc: TOMLDocument) -> str:
    return tomlkit.dumps(doc)


def save_document(doc: TOMLDocument, path: str | Path) -> None:
    """Write atomically, keeping the file's permissions, so a crash never leaves half a
    profile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tomlkit.dumps(doc))


def parse_input(text: str, kind: FieldKind) -> Any:
    """A form field's text as a TOML value. Empty means "use the default" (None).
    Text that is not a valid number or pair is kept as a string, so validation
    reports it with the same message the CLI gives for that file."""
    text = text.strip()
    if not text:
        return None
    if kind in ("str", "choice"):
        return text
    if kind == "bool":
        return text.lower() in ("1", "true", "yes", "on")
    literal = text if kind not in ("pair", "list") or text.startswith("[") else f"[{text}]"
    try:
        value = tomlkit.parse(f"v = {literal}")["v"]
    except ParseError:
        return text
    return value.unwrap() if isinstance(value, Item) else value


def format_value(value: Any) -> str:
    """A value as a form field shows it (the inverse of :func:`parse_input`)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- schema -------------------------------------------------------------------------------
def schema_fields(model: type[BaseModel] = Profile, prefix: str = "") -> list[FieldSpec]:
    """Every leaf field of the schema, in declaration order, as form rows."""
    out: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(schema_fields(ann, f"{key}."))
            continue
        default = info.get_default(call_default_factory=True)
        kind, choices = _kind(ann)
        out.append(
            FieldSpec(key, kind, default, info.description or "", choices, _limits(info.metadata))
        )
    return out


def _kind(ann: Any) -> tuple[FieldKind, tuple[str, ...]]:
    origin = typing.get_origin(ann)
    if origin is Literal:
        return "choice", tuple(str(a) for a in typing.get_args(ann))
    if origin in (tuple, typing.Tuple):  # noqa: UP006 - matching what annotations may hold
        return "pair", ()
    if origin is list and typing.get_args(ann) == (float,):
        return "list", ()  # per-view values: "0, 0.2"
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"optional fields are not supported in profiles: {ann}")
    if ann is bool:
        return "bool", ()
    if ann is int:
        return "int", ()
    if ann is float:
        return "float", ()
    return "str", ()


def _limits(metadata: Sequence[Any]) -> str:
    """Range constraints as text ("≥ 1, ≤ 1024") for the help line."""
    parts = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                parts.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(parts)


# -- comparing ------------------------------------------------------------------------------
def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) pairs of a nested mapping."""
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def differing_keys(profiles: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Keys whose values are not the same in every profile (missing = None), sorted."""
    flat = [dict(flatten(p)) for p in profiles]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for key in keys:
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            out.append((key, values))
    return out
