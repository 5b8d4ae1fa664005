"""The profile form: every schema field in one table, and one editor for the highlighted field.

A table row per field (key, value in the file, default, help or error) keeps
the form cheap to build and to restyle (one widget, not hundreds), so it opens
at once over SSH. The editor under it shows the field's full help and the
right control: a select for choices, a switch for booleans, a text field
otherwise; the error for that field sits right under the control.

The form knows nothing about files or validation; it turns what the user typed
into TOML values (:func:`~sslterm.profile.edit.parse_input`) and posts
:class:`FieldChanged`. The composer screen decides what to do with it.

Help texts, values and errors are shown as written (``Text``), never read as markup:
``[simclr]`` in a help text stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, Select, Static, Switch

from sslterm.profile.edit import FieldSpec, format_value, get_value, parse_input


class FieldChanged(Message):
    """The user changed a field; ``value`` None means "not set: use the default"."""

    def __init__(self, key: str, value: Any) -> None:
        super().__init__()
        self.key, self.value = key, value


def help_text(spec: FieldSpec) -> str:
    parts = [spec.help or spec.key]
    if spec.choices:
        parts.append(f"one of {', '.join(spec.choices)}")
    if spec.limits:
        parts.append(spec.limits)
    return " · ".join(parts)


class FieldTable(DataTable):
    """One row per field; the value column shows what the file sets (blank: default)."""

    BINDINGS = [Binding("enter", "edit", "Edit field", show=False)]

    class EditRequested(Message):
        pass

    def __init__(self, specs: list[FieldSpec], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.specs = {s.key: s for s in specs}
        self.error_keys: list[str] = []

    def on_mount(self) -> None:
        self.add_column("key", key="key")
        self.add_column("value", key="value", width=16)
        self.add_column("default", key="default", width=10)
        self.add_column("help / error", key="note")
        self._add_rows()

    def _add_rows(self) -> None:
        for key, spec in self.specs.items():
            self.add_row(Text(key), "", _clip(format_value(spec.default), 10),
                         Text(help_text(spec)), key=key)  # fmt: skip

    def show_fields(self, specs: list[FieldSpec], doc: Mapping[str, Any]) -> None:
        """Show these fields instead (another method's section, say), with their values in
        ``doc``; the cursor stays on its field. Error marks go: the caller shows them anew."""
        if [s.key for s in specs] == list(self.specs):
            return
        current = self.selected
        self.specs = {s.key: s for s in specs}
        self.error_keys = []
        self.clear()
        self._add_rows()
        self.load(doc)
        if current is not None:
            self.goto(current.key)

    @property
    def selected(self) -> FieldSpec | None:
        if not self.row_count:
            return None
        row = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return self.specs.get(str(row.value))

    def load(self, doc: Mapping[str, Any]) -> None:
        for key in self.specs:
            self.show_value(key, get_value(doc, key))

    def show_value(self, key: str, value: Any) -> None:
        self.update_cell(key, "value", _clip(format_value(value), 16))

    def note(self, key: str) -> str:
        """The help / error cell of ``key``'s row, as shown."""
        return str(self.get_cell(key, "note"))

    @property
    def error_key(self) -> str | None:
        """The first marked field (the one the one-line error names)."""
        return self.error_keys[0] if self.error_keys else None

    def show_errors(self, errors: Mapping[str, str]) -> list[str]:
        """Mark each ``key``'s row with its message (the short form: the full line is in
        the editor under the field and above the preview), clearing earlier marks.
        Returns the keys marked; keys that are not fields (a typo in the file) are not."""
        for old in self.error_keys:
            if old not in errors:
                self.update_cell(old, "key", Text(old))
                self.update_cell(old, "note", Text(help_text(self.specs[old])))
        self.error_keys = [k for k, msg in errors.items() if k in self.specs and msg]
        for key in self.error_keys:
            self.update_cell(key, "key", Text(f"✗ {key}", style="bold red"))
            self.update_cell(key, "note", Text(f"✗ {errors[key]}", style="bold red"))
        return self.error_keys

    def goto(self, key: str) -> None:
        if key in self.specs:
            self.move_cursor(row=self.get_row_index(key), animate=False)

    def action_edit(self) -> None:
        self.post_message(self.EditRequested())


def _clip(text: str, width: int) -> Text:
    return Text(text if len(text) <= width else text[: width - 1] + "…")


class FieldEditor(Vertical):
    """Edits one field; changes are posted as you type (live validation)."""

    DEFAULT_CSS = """
    FieldEditor { height: auto; border: round $accent; padding: 0 1; }
    FieldEditor #field-help { color: $text-muted; }
    FieldEditor Horizontal { height: auto; }
    FieldEditor #field-key { width: auto; padding: 0 1 0 0; text-style: bold; }
    FieldEditor Input, FieldEditor Select { width: 1fr; }
    FieldEditor #field-error { color: $error; text-style: bold; }
    """

    BINDINGS = [Binding("escape", "done", "Back to fields")]

    class Done(Message):
        pass

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec: FieldSpec | None = None
        self._input_key: str | None = None
        """The key the text field holds (None: the field is not shown)."""
        self._typed = False
        """Whether the user typed into the text field since it was shown."""

    def compose(self) -> ComposeResult:
        yield Static(id="field-help")
        with Horizontal():
            yield Label(id="field-key")
            yield Input(id="edit-input", compact=True)
            yield Select([], id="edit-select", compact=True, allow_blank=True)
            yield Switch(id="edit-switch")
        yield Static(id="field-error")

    @property
    def help(self) -> str:
        """The help text shown above the control."""
        return str(self.query_one("#field-help", Static).render())

    def edit(self, spec: FieldSpec, value: Any) -> None:
        """Show ``spec`` with its current ``value`` (None: not set in the file).

        The field being typed into keeps what it holds: the user's input is newer than
        any ``value`` the caller read (a late message, a check that comes back), and it
        reaches the document through :class:`FieldChanged` anyway. A text field left
        empty for another field sets its key back to the default, as leaving it does."""
        same = self.spec is not None and self.spec.key == spec.key
        if same and self.editing:
            return
        inp = self.query_one("#edit-input", Input)
        if not same and self._typed and self._input_key is not None and not inp.value.strip():
            self.post_message(FieldChanged(self._input_key, None))
        self._typed = False
        self.spec = spec
        self.border_title = spec.key
        self.query_one("#field-key", Label).update(Text(spec.key.rpartition(".")[2]))
        default = format_value(spec.default) or "(empty)"
        self.query_one("#field-help", Static).update(Text(f"{help_text(spec)} · default {default}"))
        sel = self.query_one("#edit-select", Select)
        sw = self.query_one("#edit-switch", Switch)
        inp.display = spec.kind not in ("bool", "choice")
        sel.display = spec.kind == "choice"
        sw.display = spec.kind == "bool"
        self._input_key = spec.key if inp.display else None
        with self.prevent(Input.Changed, Select.Changed, Switch.Changed):
            if spec.kind == "bool":
                sw.value = bool(spec.default if value is None else value)
            elif spec.kind == "choice":
                options = list(spec.choices)
                if value is not None and str(value) not in options:
                    options.append(str(value))  # an invalid value stays visible with its error
                sel.prompt = f"default: {spec.default}"
                sel.set_options([(c, c) for c in options])
                sel.value = Select.NULL if value is None else str(value)
            else:
                inp.placeholder = f"default: {default}"
                inp.value = format_value(value)

    @property
    def editing(self) -> bool:
        """Whether the user is in this field's control (typing, choosing)."""
        if self.spec is None:
            return False
        control = self.query_one(self._control(self.spec))
        return control.has_focus or bool(getattr(control, "expanded", False))

    @staticmethod
    def _control(spec: FieldSpec) -> str:
        return {"bool": "#edit-switch", "choice": "#edit-select"}.get(spec.kind, "#edit-input")

    def set_error(self, message: str | None) -> None:
        self.query_one("#field-error", Static).update(Text(message or ""))
        self.set_class(bool(message), "-error")

    def focus_editor(self) -> None:
        if self.spec is not None:
            self.query_one(self._control(self.spec)).focus()

    def action_done(self) -> None:
        self.post_message(self.Done())

    @on(Input.Submitted, "#edit-input")
    def _submitted(self) -> None:
        self.post_message(self.Done())

    @on(Input.Changed, "#edit-input")
    def _input(self, event: Input.Changed) -> None:
        """Live: every keystroke is validated. An empty field is left alone until the
        cursor leaves it, so retyping a value keeps the key where it was in the file."""
        event.stop()
        self._typed = True
        spec = self.spec
        if spec is not None and spec.key == self._input_key and event.value.strip():
            self.post_message(FieldChanged(spec.key, parse_input(event.value, spec.kind)))

    @on(Input.Blurred, "#edit-input")
    def _left(self, event: Input.Blurred) -> None:
        """Empty: the default applies, to the key the field holds (the highlighted field
        may be another one by the time the focus left)."""
        if self._typed and self._input_key is not None and not event.value.strip():
            self.post_message(FieldChanged(self._input_key, None))

    @on(Select.Changed, "#edit-select")
    def _select(self, event: Select.Changed) -> None:
        event.stop()
        if self.spec is not None:
            value = None if event.value is Select.NULL else event.value
            self.post_message(FieldChanged(self.spec.key, value))

    @on(Switch.Changed, "#edit-switch")
    def _switch(self, event: Switch.Changed) -> None:
        event.stop()
        if self.spec is not None:
            self.post_message(FieldChanged(self.spec.key, event.value))
