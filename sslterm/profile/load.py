"""Load, override and validate profiles; every failure is one ``ProfileError`` line.

Errors name the file, the line and the dotted key, and say what was expected:
``profiles/x.toml:14: train.base_lr: must be > 0 (got -0.1)``.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ValidationError

from sslterm.errors import ProfileError
from sslterm.profile.schema import LEGACY_MODEL_KEYS, METHOD_SECTIONS, Profile

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


def _section(path: tuple[str, ...]) -> type[BaseModel]:
    """The schema model the dotted ``path`` (a section, or a key's parents) leads to."""
    model: type[BaseModel] = Profile
    for part in path:
        ann = getattr(model.model_fields.get(part), "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return model


def _field_names(path: tuple[str, ...]) -> list[str]:
    return list(_section(path).model_fields)


def _pair_message(loc: tuple[str, ...]) -> str:
    """What a list-valued key needs, shown by its default: ``[0.08, 1]``."""
    default = _section(loc[:-1]).model_fields[loc[-1]].get_default()
    example = f"[{', '.join(f'{v:g}' for v in default)}]"
    return f"must be a list of {len(default)} numbers, like {example}"


def _shown(value: Any) -> str:
    """A TOML value as the user wrote it: dates as dates, not ``datetime.date(...)``."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return repr(value)


_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_PLAIN = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": 'must be a string in quotes, like "text"',
    "string_too_long": "must be at most {max_length} characters long",
}
_PAIR = ("tuple_type", "too_short", "too_long")
_SECTION = ("model_type", "model_attributes_type", "dict_type")


def _unknown_key(loc: tuple[str, ...]) -> str:
    """"Did you mean" among the section's keys; in [model] also the SimCLR keys that moved
    out of it, and in a method section the keys only another method has."""
    known = {".".join([*loc[:-1], k]): k for k in _field_names(loc[:-1])}
    if loc[:-1] == ("model",):
        known.update({f"simclr.{k}": k for k in LEGACY_MODEL_KEYS})
    close = difflib.get_close_matches(loc[-1], list(dict.fromkeys(known.values())), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{next(k for k, v in known.items() if v == close[0])}'?"
    owners = [m for m in METHOD_SECTIONS if loc[-1] in _field_names((m,))]
    if loc[:-1] and loc[0] in METHOD_SECTIONS and owners:
        return f"unknown key in [{loc[0]}]; it belongs to {' and '.join(f'[{m}]' for m in owners)}"
    return f"unknown key (known: {', '.join(_field_names(loc[:-1]))})"


def _plain_message(kind: str, loc: tuple[str, ...], err: dict[str, Any]) -> str:
    """Pydantic's error ``kind`` in the words of a profile: what to write instead."""
    ctx = err.get("ctx") or {}
    indexed = any(isinstance(p, int) for p in err["loc"])
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind in _SECTION:
        name = ".".join(loc)
        if isinstance(err.get("input"), list):
            return f"[[{name}]] makes a list of tables; write [{name}] once"
        return f"must be a [{name}] table of keys, not a single value"
    if kind in _PAIR or (kind == "missing" and indexed):
        return _pair_message(loc)
    if kind in _OPS:
        bound = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        return f"must be {_OPS[kind]} {bound}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "missing":
        return "is required"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else (
            f"must be at least {ctx.get('min_length')} characters long")
    if kind == "string_pattern_mismatch":
        allowed = str(ctx.get("pattern", "")).strip("^$*+").strip("[]")
        return f"may only use the characters {allowed}"
    if kind in _PLAIN:
        return _PLAIN[kind].format(**ctx)
    return err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """(dotted key, plain message) for one pydantic error; pydantic's wording never shows."""
    loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
    error = (err.get("ctx") or {}).get("error")
    if getattr(error, "key", None):
        return error.key, str(error)
    kind = err["type"]
    msg = _plain_message(kind, loc, err)
    shown = err.get("input")
    hidden = kind in ("missing", "extra_forbidden") or isinstance(shown, dict) or (
        kind in _SECTION and isinstance(shown, list))
    if not hidden and "input" in err:
        msg = f"{msg} (got {_shown(err['input'])})"
    if kind == "literal_error" and isinstance(shown, str):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(shown, expected, n=1, cutoff=0.6)
        msg += f"; did you mean '{close[0]}'?" if close else ""
    return ".".join(loc), msg


def _on_command_line(err: dict[str, Any], key: str, msg: str, cli_keys: set[str]) -> tuple[str, str]:
    """A conflict between keys is shown at the one set on the command line, if any."""
    alternatives = getattr((err.get("ctx") or {}).get("error"), "alternatives", {})
    if key in cli_keys:
        return key, msg
    return next(((k, m) for k, m in alternatives.items() if k in cli_keys), (key, msg))


def _as_written(key: str, data: dict[str, Any]) -> str:
    """``key`` as the profile spells it: a SimCLR key written in [model] (the layout before
    method sections) is reported there, at its own line, not as ``simclr.*``."""
    section, _, leaf = key.partition(".")
    model = data.get("model")
    if section == "simclr" and leaf in LEGACY_MODEL_KEYS and isinstance(model, dict) and leaf in model:
        return f"model.{leaf}"
    return key


def _profile_error(
    exc: ValidationError, path: str, text: str, cli_keys: set[str], data: dict[str, Any]
) -> ProfileError:
    """The first problem, carrying the others (one per key) in ``also``."""
    found: dict[str, ProfileError] = {}
    for err in exc.errors():
        key, msg = _describe(err)
        key, msg = _on_command_line(err, _as_written(key, data), msg, cli_keys)
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
        raise ProfileError(CLI, None, key, "not a dotted key like simclr.temperature")
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
        raise _profile_error(exc, path, text, set(cli_keys), data) from None
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


def path_keys(model: type[BaseModel] = Profile, prefix: str = "") -> list[str]:
    """The dotted keys that name a file or folder (marked ``PATH`` in the schema)."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += path_keys(ann, f"{prefix}{name}.")
        elif isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("path"):
            keys.append(f"{prefix}{name}")
    return keys


def frozen_data(profile: Profile, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
    """``profile`` as the data its frozen form holds: every key of every section, except
    that the sections of the methods not chosen keep only the keys the user set there (and
    vanish without any), so a sweep over ``model.method`` keeps each method's settings
    while the file stays about the run it describes."""
    data = profile.model_dump(mode=mode)
    for name in METHOD_SECTIONS:
        if name != profile.model.method:
            data[name] = getattr(profile, name).model_dump(mode=mode, exclude_unset=True)
            if not data[name]:
                del data[name]
    return data


def frozen(profile: Profile, cwd: str | os.PathLike[str] | None = None) -> Profile:
    """``profile`` with every path key absolute, read against ``cwd`` (default: the current
    directory), so a run reproduces from any directory. Relative paths in a profile file and
    in overrides alike mean "from where the command runs", as in most command-line tools;
    ``~`` is expanded and empty values (unset) stay empty."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    data = frozen_data(profile)
    for key in path_keys():
        section, leaf = key.split(".")
        value = data[section][leaf]
        if value:
            data[section][leaf] = os.path.normpath(base / Path(value).expanduser())
    return Profile.model_validate(data)


def _method_first(data: dict[str, Any], method: str) -> dict[str, Any]:
    """``data`` with the chosen method's section right after [model], the others after it."""
    order = [*data]
    order.remove(method)
    order.insert(order.index("model") + 1, method)
    return {k: data[k] for k in order}


def resolved_toml(profile: Profile) -> str:
    """The frozen profile (:func:`frozen`) as TOML, every default written out, each key
    commented with its help text, so a run can be reproduced from this file alone, from
    any directory."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("sslterm profile, fully resolved"))
    data = frozen_data(frozen(profile), mode="json")
    for name, value in _method_first(data, profile.model.method).items():
        if isinstance(value, dict):
            section: type[BaseModel] = Profile.model_fields[name].annotation  # type: ignore[assignment]
            doc.add(name, _commented_table(section, value))
        else:
            doc.add(name, value)
    views = profile.augment.view_lines(profile.view_count())
    if views:  # the per-view lists as the views that take them
        table = doc["augment"]["views"]
        table.add(tomlkit.comment(f"{profile.model.method} makes {profile.view_count()} views:"))
        for line in views:
            table.add(tomlkit.comment(f"  {line}"))
    return tomlkit.dumps(doc)


def _commented_table(section: type[BaseModel], values: dict[str, Any]) -> Any:
    """A TOML table of ``values``, each key commented with its help text; a nested
    section ([augment.views]) becomes a sub-table."""
    table = tomlkit.table()
    for key, raw in values.items():
        sub = section.model_fields[key].annotation
        if isinstance(raw, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            table.add(key, _commented_table(sub, raw))
            continue
        item = tomlkit.item(raw)
        desc = section.model_fields[key].description
        if desc:
            item.comment(desc)
        table.add(key, item)
    return table
