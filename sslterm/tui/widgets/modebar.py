"""The top line: which view is shown, the digit keys of the others, and a status note."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

VIEWS = (
    ("runs", "1", "Runs"),
    ("composer", "2", "Compose"),
    ("compare", "3", "Compare"),
    ("queue", "4", "Queue"),
    ("system", "5", "System"),
    ("sweep", "6", "Sweeps"),
)


class ModeBar(Widget):
    """One line; replaces a header so small terminals keep their rows for data."""

    DEFAULT_CSS = """
    ModeBar { height: 1; background: $panel; }
    """

    note: reactive[str] = reactive("")

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def render(self) -> Text:
        text = self._line(compact=False)
        if self.note and text.cell_len > self.size.width:  # narrow: the note (the run) first
            text = self._line(compact=True)
        text.truncate(max(1, self.size.width), overflow="ellipsis")
        return text

    def _line(self, compact: bool) -> Text:
        """Every view's key and label; ``compact`` labels only the current view."""
        text = Text(" sslterm ", style="bold reverse")
        for mode, key, label in VIEWS:
            current = mode == self.current
            text.append(" ")
            text.append(f" {key} {label} " if current or not compact else key,
                        style="bold reverse" if current else "")
        if self.note:
            text.append("  │ ")
            text.append(self.note, style="italic")
        return text
