"""Small modal dialogs: confirm, ask for a path, pick a profile. All keyboard-driven."""

from __future__ import annotations

from pathlib import Path

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList
from textual.widgets.option_list import Option

from sslterm.tui import format as fmt


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no; dismisses True only on an explicit 'y'."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, id="question")
            yield Label("[b]y[/b] yes   [b]n[/b] no", classes="hint")
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PathPrompt(ModalScreen[str | None]):
    """One line of text (a file path); Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(value=self.value, id="path")
        yield Footer()

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ProfilePicker(ModalScreen[tuple[Path, bool] | None]):
    """Profiles in the profiles folder, or any path typed in.

    Enter opens the file to edit it in place; 'c' starts a new, unsaved profile
    from it (save-as asks where)."""

    BINDINGS = [
        Binding("enter", "pick(False)", "Open", priority=True),
        Binding("c", "pick(True)", "New from it"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, profiles_dir: Path) -> None:
        super().__init__()
        self.profiles = sorted(profiles_dir.glob("*.toml")) if profiles_dir.is_dir() else []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Open a profile ([b]enter[/b] edit it, [b]c[/b] new profile from it)")
            yield OptionList(*(Option(str(p), id=str(p)) for p in self.profiles), id="profiles")
            yield Label("…or a path:")
            yield Input(placeholder="path/to/profile.toml", id="path")
        yield Footer()

    def on_mount(self) -> None:
        if not self.profiles:
            self.query_one("#path", Input).focus()

    def on_key(self, event: events.Key) -> None:
        """Typing a path while the list has focus types it into the path field; only 'c'
        (new from the highlighted profile) is a key of the list."""
        path = self.query_one("#path", Input)
        if path.has_focus or not event.is_printable or event.character in (None, "c", " "):
            return
        path.select_on_focus = False  # or the next key would replace this one
        path.focus()
        path.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()

    def action_pick(self, copy: bool) -> None:
        typed = self.query_one("#path", Input)
        if typed.has_focus and typed.value.strip():
            self.dismiss((Path(typed.value.strip()).expanduser(), copy))
            return
        options = self.query_one("#profiles", OptionList)
        if options.highlighted is not None and self.profiles:
            self.dismiss((self.profiles[options.highlighted], copy))

    def action_cancel(self) -> None:
        self.dismiss(None)


class MetricPicker(ModalScreen[str | None]):
    """Every series a run logs (methods add their own), with its latest value."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, choices: list[tuple[str, str, float]]) -> None:
        """``choices``: (series name, title, latest value)."""
        super().__init__()
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Chart a metric ([b]enter[/b] show it, [b]escape[/b] back)")
            yield OptionList(
                *(Option(f"{title}  [dim]{fmt.number(v)}[/dim]", id=name)
                  for name, title, v in self.choices),  # fmt: skip
                id="metrics",
            )
        yield Footer()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
