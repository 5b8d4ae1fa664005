"""Small modal dialogs: confirm, ask for a path, pick a profile, a metric or the runs
table's columns, list the keys. All keyboard-driven. Text that comes from files, runs
or errors is shown as written, never read as markup (``[simclr]`` stays)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, SelectionList
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
            yield Label(Text(self.question), id="question")
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
            yield Label(Text(self.title_text))
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
            yield OptionList(*(Option(Text(str(p)), id=str(p)) for p in self.profiles),
                             id="profiles")  # fmt: skip
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
                *(Option(f"{escape(title)}  [dim]{fmt.number(v)}[/dim]", id=name)
                  for name, title, v in self.choices),  # fmt: skip
                id="metrics",
            )
        yield Footer()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ColumnPicker(ModalScreen[tuple[str, ...] | None]):
    """Which columns a table shows: space shows or hides the highlighted one, enter applies,
    escape keeps them as they were."""

    BINDINGS = [
        Binding("enter", "apply", "Apply", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, columns: list[tuple[str, str]], shown: Iterable[str]) -> None:
        """``columns``: (key, label) of each column offered; ``shown``: the keys shown now."""
        super().__init__()
        self.columns, self.shown = columns, set(shown)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text.assemble("Columns of the runs table (", ("space", "bold"),
                                      " show/hide, ", ("enter", "bold"), " apply, ",
                                      ("escape", "bold"), " cancel)"))  # fmt: skip
            yield SelectionList[str](
                *((label, key, key in self.shown) for key, label in self.columns), id="columns"
            )
        yield Footer()

    def on_mount(self) -> None:
        columns = self.query_one("#columns", SelectionList)
        columns.focus()
        columns.highlighted = 0

    @property
    def selected(self) -> tuple[str, ...]:
        picked = set(self.query_one("#columns", SelectionList).selected)
        return tuple(key for key, _ in self.columns if key in picked)

    def action_apply(self) -> None:
        self.dismiss(self.selected)

    def action_cancel(self) -> None:
        self.dismiss(None)


class MetaScreen(ModalScreen[tuple[str, str, str] | None]):
    """A run's label, tags (space-separated) and note; enter in any field saves all three,
    escape keeps them as they were."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, label: str, tags: Iterable[str], note: str) -> None:
        super().__init__()
        self.run_id, self.values = run_id, (label, " ".join(tags), note)

    def compose(self) -> ComposeResult:
        label, tags, note = self.values
        with Vertical(classes="dialog"):
            yield Label(Text.assemble(("Label, tags and note", "bold"), f" of {self.run_id} (",
                                      ("enter", "bold"), " saves, ", ("escape", "bold"),
                                      " cancels)"))  # fmt: skip
            yield Input(value=label, placeholder="label (legends and tables)", id="meta-label")
            yield Input(value=tags, placeholder="tags, separated by spaces", id="meta-tags")
            yield Input(value=note, placeholder="note", id="meta-note")
        yield Footer()

    @on(Input.Submitted)
    def _submit(self) -> None:
        self.dismiss(tuple(self.query_one(f"#meta-{name}", Input).value
                           for name in ("label", "tags", "note")))  # type: ignore[arg-type]

    def action_cancel(self) -> None:
        self.dismiss(None)


class KeysScreen(ModalScreen[None]):
    """Every key of the screen underneath (``?``), over it: the screen keeps its layout."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, keys: list[tuple[str, str]], notes: Iterable[str] = ()) -> None:
        """``keys``: (key, what it does); ``notes``: lines shown under them."""
        super().__init__()
        self.keys, self.notes = keys, list(notes)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="keys-dialog"):
            yield Label(Text.assemble(("Keys", "bold"), " of this view (", ("↑↓", "bold"),
                                      " more, ", ("escape", "bold"), " or ", ("?", "bold"),
                                      " closes)"))  # fmt: skip
            table = DataTable(id="keys", cursor_type="row", zebra_stripes=True, show_header=False)
            table.add_columns("key", "what")
            for key, what in self.keys:
                table.add_row(Text(key, style="bold", justify="right"), Text(what))
            yield table
            if self.notes:
                yield Label(Text("\n".join(self.notes)), classes="hint", id="keys-notes")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#keys", DataTable).focus()

    def action_close(self) -> None:
        self.dismiss(None)
