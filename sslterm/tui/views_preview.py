"""The composer's view preview: ``sslterm views`` in a child process (it imports torch, which
the app never does), its PNG drawn in the terminal with half blocks (two pixels a cell)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.style import Style
from rich.text import Text

from sslterm.tui.checks import _child_output

PREVIEW_TIMEOUT = 300.0


@dataclass(frozen=True)
class Preview:
    """The grid's pixels (uint8 [H, W, 3]) and the command's line, or the error line."""

    pixels: np.ndarray | None
    message: str


def render_views(text: str, images: int = 4, cancelled: Callable[[], bool] = lambda: False,
                 timeout: float = PREVIEW_TIMEOUT) -> Preview | None:
    """The views of profile ``text``; None when cancelled (a newer preview, the app's exit)."""
    with tempfile.TemporaryDirectory(prefix="sslterm-views-") as tmp:
        profile, png = Path(tmp) / "profile.toml", Path(tmp) / "views.png"
        profile.write_text(text, encoding="utf-8")
        out = _child_output([sys.executable, "-m", "sslterm", "views", str(profile),
                             "--images", str(images), "--out", str(png)], cancelled, timeout)
        if out is None:
            return None
        stdout, stderr = out
        if not png.is_file():
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            return Preview(None, tail.removeprefix("sslterm: "))
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))
    line = (stdout.strip().splitlines() or [""])[-1]
    return Preview(pixels, line.split(": ", 1)[-1])


def half_blocks(pixels: np.ndarray, width: int) -> Text:
    """``pixels`` scaled to at most ``width`` cells across (never up), each cell an upper
    half block: its foreground the upper pixel, its background the lower one."""
    h, w, _ = pixels.shape
    scale = min(1.0, width / w)
    if scale < 1.0:
        size = (max(1, int(w * scale)), max(2, int(h * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
    if len(pixels) % 2:
        pixels = np.concatenate([pixels, pixels[-1:]])
    out = Text()
    for top, bottom in zip(pixels[0::2], pixels[1::2], strict=True):
        for (r1, g1, b1), (r2, g2, b2) in zip(top.tolist(), bottom.tolist(), strict=True):
            out.append("▀", Style(color=f"rgb({r1},{g1},{b1})", bgcolor=f"rgb({r2},{g2},{b2})"))
        out.append("\n")
    out.rstrip()
    return out
