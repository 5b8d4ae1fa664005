"""Load, override and validate profiles; every failure is one ``ProfileError`` line.

Errors name the file, the line and the dotted key, and say what was expected:
``profiles/x.toml:14: train.base_lr: must be > 0 (got -0.1)``.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import BaseModel, ValidationError

from sslterm.errors import ProfileError
from sslterm.profile.schema import Profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLI = "<command line>"
_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")


def locate(text: str, key: str) -> int | None:
    """Line (1-based) where dotted ``key`` is set in TOML ``text``, or its table header."""
    section = ""
    header_line = None
    parts = key.split(".")
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            section = m.group(1).replace(" ", "").replace('"', "").replace("'", "")
            if section == ".".join(parts[:-1]) or section == key:
                header_line = header_line or n
            continue
        m = _KEY.match(line)
        if m:
            local = m.group(1).replace('"', "").replace("'", "")
            full = f"{section}.{local}" if section else local
            if full == key:
                return n
    if header_line is not None:
        return header_line
    return None


def _field_names(path: tuple[str | int, ...]) -> list[str]:
    model: type[BaseModel] = Profile
    for part in path:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return list(model.model_fields)


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """(dotted key, message) for one pydantic error."""
    loc = tuple(p for p in err["loc"] if not isinstance(p, int))
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    error = (err.get("ctx") or {}).get("error")
    if getattr(error, "key", None):
        return error.key, str(error)
    if kind == "extra_forbidden":
        known = _field_names(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
        return key, f"unknown key{hint} (known: {', '.join(known)})" if not close else f"unknown key{hint}"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")))
        msg = f"must be {op} {bound}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected', '')}"
    elif kind == "missing":
        msg = "is required"
    if "input" in err and kind not in ("missing", "model_type") and not isinstance(
        err["input"], dict
    ):
        msg = f"{msg} (got {err['input']!r})"
    return key, msg


def _profile_error(exc: ValidationError, path: str, text: str, cli_keys: set[str]) -> ProfileError:
    """The first problem, carrying the others (one per key) in ``also``."""
    found: dict[str, ProfileError] = {}
    for err in exc.errors():
        key, msg = _describe(err)
        if key in found:
            continue
        if any(k == key or k.startswith(f"{key}.") for k in cli_keys):
            found[key] = ProfileError(CLI, None, key, msg)
        else:
            found[key] = ProfileError(path, locate(text, key), key or None, msg)
    first, *rest = found.values()
    return ProfileError(first.path, first.line, first.key, first.message, tuple(rest))


def parse_toml(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POS.search(str(exc))
        line = None if m is None else int(m.group(1) or len(text.splitlines()) or 1)
        reason = _TOML_POS.sub("", str(exc)).strip()
        raise ProfileError(path, line, None, f"TOML syntax error: {reason}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``0.2``, ``true``, ``[1,2]``) or a bare string."""
    if "=" not in item:
        raise ProfileError(CLI, None, item, "override must look like key=value")
    key, raw = (s.strip() for s in item.split("=", 1))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ProfileError(CLI, None, key, "not a dotted key like model.temperature")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> set[str]:
    keys = set()
    for item in overrides:
        key, value = parse_override(item)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ProfileError(CLI, None, key, f"'{part}' is not a section")
            node = child
        node[leaf] = value
        keys.add(key)
    return keys


def validate_data(
    data: dict[str, Any], path: str, text: str = "", cli_keys: set[str] = frozenset()
) -> Profile:
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise _profile_error(exc, path, text, set(cli_keys)) from None
    if not profile.name:
        stem = Path(path).stem if path not in (CLI, "<profile>") else "profile"
        profile.name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "profile"
    return profile


def validate_text(text: str, path: str = "<profile>", overrides: Sequence[str] = ()) -> Profile:
    data = parse_toml(text, path)
    cli_keys = apply_overrides(data, overrides)
    return validate_data(data, path, text, cli_keys)


def load_profile(path: str | Path, overrides: Sequence[str] = ()) -> Profile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(str(path), None, None, "no such profile file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(str(path), None, None, f"cannot read: {exc}") from None
    return validate_text(text, str(path), overrides)


def resolved_toml(profile: Profile) -> str:
    """The complete profile as TOML, every default written out, each key commented
    with its help text, so a run can be reproduced from this file alone."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("sslterm profile, fully resolved"))
    data = profile.model_dump(mode="json")
    for name, value in data.items():
        if isinstance(value, dict):
            table = tomlkit.table()
            section: type[BaseModel] = Profile.model_fields[name].annotation  # type: ignore[assignment]
            for key, raw in value.items():
                item = tomlkit.item(raw)
                desc = section.model_fields[key].description
                if desc:
                    item.comment(desc)
                table.add(key, item)
            doc.add(name, table)
        else:
            doc.add(name, value)
    return tomlkit.dumps(doc)
