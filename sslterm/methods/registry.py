"""Method registry: ``model.method`` names map to nn.Module classes.

This module never imports the methods (timm style): the package ``sslterm/methods/__init__``
imports them and each registers itself, so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from sslterm.errors import UserError, unknown_name

METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Decorator: make the class available as ``model.method = name``."""

    def deco(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type:
    """The class registered as ``name``; an unknown one is a UserError with a "did you mean"."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(unknown_name("method", name, METHODS)) from None
