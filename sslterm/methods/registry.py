"""Method registry: ``model.method`` names map to nn.Module classes."""

from __future__ import annotations

from collections.abc import Callable

METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type:
    import sslterm.methods.simclr  # noqa: F401  (registers itself)

    return METHODS[name]
