"""Plain-text formatting for table cells and chart titles (pure, so tests pin it)."""

from __future__ import annotations

import time

from sslterm.runs.summary import plural  # noqa: F401 - the CLI's one, re-exported for the views


def duration(seconds: float | None) -> str:
    """``42s``, ``12m05s``, ``3h07m``, ``2d04h``: short enough for a table column."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def started(ts: float | None) -> str:
    """Local time of day for today's runs, the date otherwise."""
    if ts is None:
        return "—"
    t = time.localtime(ts)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def number(value: float | None, digits: int = 4) -> str:
    """Compact significant-digit form; ``—`` for missing."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 10**digits or abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def epochs(done: int | None, total: int | None) -> str:
    if done is None and total is None:
        return "—"
    return f"{done or 0}/{total or '?'}"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def bar(fraction: float, width: int = 20) -> str:
    """A text bar that still reads with NO_COLOR."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def elide(text: str, width: int, tail: int = 7, head: int = 3) -> str:
    """``text`` in at most ``width`` cells, the middle replaced by ``…``: up to ``tail``
    last characters stay (a run id's time of day: what tells a profile's runs apart),
    and the start with at least ``head`` characters where there is room (its name)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    tail = max(0, min(tail, width - 1 - head, len(text)))
    if tail == 0:
        return text[: width - 1] + "…"
    return text[: width - 1 - tail] + "…" + text[-tail:]
