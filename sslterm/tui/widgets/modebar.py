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
        text = Text(" sslterm ", style="bold reverse")
        for mode, key, label in VIEWS:
            style = "bold reverse" if mode == self.current else ""
            text.append(" ")
            text.append(f" {key} {label} ", style=style)
        if self.note:
            text.append("  │ ")
            text.append(self.note, style="italic")
        text.truncate(max(1, self.size.width), overflow="ellipsis")
        return text
