"""Notifications shown as written: run ids, paths, TOML sections (``[simclr]``) and the
CLI's error lines are text, never Rich markup (a bracketed word would vanish)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.dom import DOMNode


def notify_plain(node: DOMNode, message: str, **kwargs: Any) -> None:
    """``node.notify(message, ...)`` with ``message`` taken literally."""
    try:
        node.notify(message, markup=False, **kwargs)
    except TypeError:  # a Textual without notify(markup=...)
        node.notify(escape(message), **kwargs)
