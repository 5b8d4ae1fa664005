"""The profile composer: a schema-built form over a tomlkit document.

Every edit changes one key of the document (comments and layout stay), then the
whole text is validated with the loader the CLI uses, so the error shown next to
the field is the CLI's own line (``file:line: key: message``). The preview is
exactly the text that Save writes (line numbers match the error's).

Data paths and the encoder need torch-side checks: once the text validates, the
launcher's own check runs in a child process (:mod:`sslterm.tui.checks`) once typing
pauses for the app's ``env_check_delay``, so a bad ``data.root`` is marked before
launch, on ``data.root``.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import get_current_worker
from tomlkit.toml_document import TOMLDocument

from sslterm.errors import ProfileError, UserError
from sslterm.profile import edit
from sslterm.profile.load import validate_text
from sslterm.profile.schema import METHOD_SECTIONS, Profile
from sslterm.runs.meta import RunMeta
from sslterm.tui.notes import notify_plain
from sslterm.tui.screens.dialogs import ConfirmScreen, PathPrompt, ProfilePicker
from sslterm.tui.widgets.modebar import ModeBar
from sslterm.tui.widgets.profile_form import FieldChanged, FieldEditor, FieldTable


def method_fields(doc: TOMLDocument) -> list[edit.FieldSpec]:
    """The form's fields: every section's, but of the method sections only the chosen
    method's (the default method's while ``model.method`` holds no known name)."""
    method = edit.get_value(doc, "model.method")
    if method not in METHOD_SECTIONS:
        method = Profile().model.method
    return [f for f in edit.schema_fields() if f.section not in METHOD_SECTIONS or f.section == method]


def environment_key(profile: Profile) -> str:
    """What the environment check depends on: a new check only when this changes."""
    return f"{profile.data.model_dump_json()}|{profile.model.encoder}"


class ComposerScreen(Screen):
    """Enter edits the highlighted field, Escape/Enter goes back to the list (where the
    digits switch views); the ctrl keys work everywhere."""

    AUTO_FOCUS = "#fields"
    BINDINGS = [
        Binding("ctrl+o", "open", "Open"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+t", "save_as", "Save as"),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("ctrl+g", "enqueue", "Queue"),
        Binding("ctrl+y", "toggle_preview", "TOML", show=False),  # (footer: 80 columns)
        Binding("ctrl+j", "goto_error", "Go to error", show=False),
        Binding("ctrl+e", "edit_meta", "Label/tags/note…", show=False),
        Binding("ctrl+v", "preview_views", "Views", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.doc: TOMLDocument = edit.parse_document("")
        self.path: Path | None = None
        self.stem = "new"
        self.origin = "new profile"
        self.dirty = False
        self.error: ProfileError | None = None
        self.launching = False
        self.env_key = ""
        """The data/encoder settings last sent to (or answered by) the environment check."""
        self.env_error: ProfileError | None = None
        self.env_checking = False
        self._env_timer: Timer | None = None
        self.meta = RunMeta()
        self.views_shown = None
        """The last view preview drawn (ctrl+v), for tests."""
        """The label, tags and note the next launch or queued run gets (ctrl+e)."""

    def compose(self) -> ComposeResult:
        yield ModeBar("composer")
        with Horizontal():
            with Vertical(id="form-pane"):
                yield Static(id="composer-title")
                # the editor above the list: a choice's dropdown opens downwards over the
                # list, never over the field's help or the footer
                yield FieldEditor(id="editor")
                yield FieldTable(method_fields(self.doc), id="fields")
            with Vertical(id="preview-pane"):
                yield Static(id="validation")
                yield Static(id="views-preview")
                with VerticalScroll(id="toml-scroll"):
                    yield Static(id="toml")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.app.composer = self
        self._refresh()
        self._edit_selected()

    @property
    def fields(self) -> FieldTable:
        return self.query_one(FieldTable)

    @property
    def editor(self) -> FieldEditor:
        return self.query_one(FieldEditor)

    @on(FieldTable.RowHighlighted, "#fields")
    def _edit_selected(self) -> None:
        spec = self.fields.selected
        if spec is not None:
            self.editor.edit(spec, edit.get_value(self.doc, spec.key))
            self._show_error(self.error)

    @on(FieldTable.EditRequested)
    def _edit_field(self) -> None:
        self.editor.focus_editor()

    @on(FieldEditor.Done)
    def _edit_done(self) -> None:
        self.fields.focus()

    def edit_field(self, key: str) -> None:
        """Highlight ``key`` and put the cursor in its editor (tests and "go to error")."""
        self.fields.goto(key)
        self._edit_selected()
        self.editor.focus_editor()

    # -- the document ---------------------------------------------------------------------
    @property
    def display_path(self) -> str:
        """The name errors use: the file when there is one, else ``<stem>.toml``."""
        return str(self.path) if self.path else f"{self.stem}.toml"

    @property
    def text(self) -> str:
        return edit.dumps(self.doc)

    def open_path(self, path: Path, copy: bool = False) -> bool:
        try:
            doc = edit.load_document(path)
        except (ProfileError, OSError) as exc:
            notify_plain(self, str(exc), severity="error", timeout=8)
            return False
        self._set_doc(doc, None if copy else path, path.stem, str(path))
        return True

    def open_text(self, text: str, stem: str, origin: str) -> None:
        """A new, unsaved profile from ``text`` (e.g. a run's frozen profile)."""
        try:
            doc = edit.parse_document(text, origin)
        except ProfileError as exc:
            notify_plain(self, str(exc), severity="error", timeout=8)
            return
        self._set_doc(doc, None, stem, origin)
        self.dirty = True
        self._refresh()

    def _set_doc(self, doc: TOMLDocument, path: Path | None, stem: str, origin: str) -> None:
        """Show ``doc``; SimCLR keys of the old layout move to [simclr] (a change to save)."""
        moved = edit.move_legacy_keys(doc)
        self.doc, self.path, self.stem, self.origin = doc, path, stem, origin
        self.dirty = bool(moved)
        if moved:
            notify_plain(self, f"moved {', '.join(moved)} to [simclr], where they are now; save to keep")
        self.fields.show_fields(method_fields(doc), doc)
        self.fields.load(doc)
        self._refresh()
        self._edit_selected()

    @on(FieldChanged)
    def _field_changed(self, event: FieldChanged) -> None:
        before = self.text
        edit.set_value(self.doc, event.key, event.value)
        self.fields.show_fields(method_fields(self.doc), self.doc)
        self.fields.show_value(event.key, edit.get_value(self.doc, event.key))
        if self.text != before:
            self.dirty = True
            self._refresh()

    def validate(self) -> ProfileError | None:
        """The schema check (the environment check's answer comes later, in a worker)."""
        return self._validate()[0]

    def _validate(self) -> tuple[ProfileError | None, Profile | None]:
        try:
            return None, validate_text(self.text, self.display_path)
        except ProfileError as exc:
            return exc, None

    def _refresh(self) -> None:
        error, profile = self._validate()
        delay = self.app.env_check_delay
        if profile is not None and delay is not None and self.text:
            key = environment_key(profile)
            if key != self.env_key:
                self.env_key, self.env_error, self.env_checking = key, None, True
                if self._env_timer is not None:
                    self._env_timer.stop()
                self._env_timer = self.set_timer(delay, partial(self._start_env_check, self.text))
            error = self.env_error
        self.error = error
        self._show_error(self.error)
        text = self.text
        self.query_one("#toml", Static).update(
            Syntax(text or "# (empty: every default applies)\n", "toml", line_numbers=True)
        )
        where = str(self.path) if self.path else f"{self.origin} → unsaved ({self.stem})"
        meta = ""
        if self.meta:
            meta = (f"\nruns get: label {escape(self.meta.label or '—')} · tags "
                    f"{escape(' '.join(self.meta.tags) or '—')}"
                    + (" · a note" if self.meta.note else ""))
        self.query_one("#composer-title", Static).update(
            f"[b]{escape(where)}[/b]{' [reverse] modified [/reverse]' if self.dirty else ''}{meta}"
        )
        self.query_one(ModeBar).note = where

    def _start_env_check(self, text: str) -> None:
        """Check ``text`` as it was when scheduled: it passed the schema check (what the
        user typed since may not have, and has its own check scheduled if it matters)."""
        self._check_environment(text, self.display_path, self.env_key)

    @work(thread=True, group="env-check", exclusive=True)
    def _check_environment(self, text: str, shown: str, key: str) -> None:
        from sslterm.tui.checks import check_environment

        worker = get_current_worker()
        error = check_environment(text, shown, lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.app.call_from_thread(self._env_checked, key, error)

    def _env_checked(self, key: str, error: ProfileError | None) -> None:
        if key != self.env_key:
            return  # the settings changed meanwhile: a newer check is on its way
        self.env_error, self.env_checking = error, False
        self._refresh()

    def _show_error(self, err: UserError | None) -> None:
        """Each problem's message goes on its field's row; the first one's full line
        goes under its editor and above the preview (where keys that are not form
        fields, e.g. typos, show), with a count of the others."""
        problems = err.problems if isinstance(err, ProfileError) else ()
        self.fields.show_errors({p.key: p.message for p in problems if p.key})
        spec = self.editor.spec
        mine = next((p for p in problems if spec and p.key == spec.key), None)
        self.editor.set_error(str(mine) if mine else None)
        status = self.query_one("#validation", Static)
        if err is None and self.env_checking:
            status.update("✓ valid so far; checking data paths and encoder… — TOML to be saved:")
        elif err is None:
            status.update("✓ valid — TOML to be saved:")
        else:
            more = problems[1:]
            extra = f"  (+{len(more)} more: {', '.join(str(p.key) for p in more)})" if more else ""
            status.update(Text(f"✗ {err}{extra}"))  # the CLI's line as written, never markup
        status.set_class(err is not None, "-error")

    # -- actions ------------------------------------------------------------------------------
    def action_preview_views(self) -> None:
        """Draw the views the method would train on (``sslterm views`` of the profile as
        it stands), or hide them when shown."""
        panel = self.query_one("#views-preview", Static)
        if panel.display:
            panel.display = False
            self.views_shown = None
            self.workers.cancel_group(self, "views")
            return
        panel.display = True
        try:
            validate_text(self.text, self.display_path)
        except UserError as err:
            panel.update(Text(f"views: fix the profile first: {err}"))
            return
        panel.update("views: drawing the first 4 training images' views…")
        self._render_views(self.text, max(20, self.query_one("#preview-pane").size.width - 2))

    @work(thread=True, group="views", exclusive=True)
    def _render_views(self, text: str, width: int) -> None:
        from sslterm.tui.views_preview import half_blocks, render_views

        worker = get_current_worker()
        preview = render_views(text, cancelled=lambda: worker.is_cancelled)
        if preview is None or worker.is_cancelled:
            return
        shown = Text(f"views ({preview.message}), ctrl+v hides them:\n")
        if preview.pixels is not None:
            shown.append_text(half_blocks(preview.pixels, width))
        self.views_shown = preview
        self.app.call_from_thread(self.query_one("#views-preview", Static).update, shown)

    def action_toggle_preview(self) -> None:
        pane = self.query_one("#preview-pane")
        pane.display = not pane.display

    def action_goto_error(self) -> None:
        """Go to the first marked field, or from one marked field to the next."""
        keys = self.fields.error_keys
        if not keys:
            return
        current = self.editor.spec.key if self.editor.spec else None
        nxt = keys[(keys.index(current) + 1) % len(keys)] if current in keys else keys[0]
        self.edit_field(nxt)

    def action_open(self) -> None:
        def picked(result: tuple[Path, bool] | None) -> None:
            if result is not None:
                self.open_path(*result)

        self.app.push_screen(ProfilePicker(self.app.profiles_dir), picked)

    def action_save(self) -> None:
        if self.path is None:
            self.action_save_as()
            return
        self._save(self.path)

    def action_save_as(self) -> None:
        default = str(self.path or self.app.profiles_dir / f"{self.stem}.toml")

        def chosen(value: str | None) -> None:
            if not value:
                return
            path = Path(value).expanduser()
            if path.exists() and path != self.path:
                self.app.push_screen(
                    ConfirmScreen(f"{path} exists. Overwrite it?"),
                    lambda yes: self._save(path) if yes else None,
                )
            else:
                self._save(path)

        self.app.push_screen(PathPrompt("Save profile as:", default), chosen)

    def _save(self, path: Path) -> None:
        try:
            edit.save_document(self.doc, path)
        except OSError as exc:
            notify_plain(self, f"cannot save {path}: {exc}", severity="error", timeout=8)
            return
        self.path, self.stem, self.origin, self.dirty = path, path.stem, str(path), False
        self._refresh()
        note = "" if self.error is None else " (it does not validate yet)"
        notify_plain(self, f"saved {path}{note}", severity="warning" if self.error else "information")

    def _refuse_invalid(self) -> bool:
        if self.error is None:
            return False
        notify_plain(self, str(self.error), title="fix the profile first", severity="error", timeout=8)
        if self.fields.error_key:
            self.edit_field(self.fields.error_key)
        return True

    def action_launch(self) -> None:
        if self._refuse_invalid():
            return
        if self.launching:
            self.notify("a launch is already on its way", severity="warning")
            return
        self.launching = True
        notify_plain(self, f"starting {self.stem}… (checking data and encoder)")
        use_file = self.path if self.path is not None and not self.dirty else None
        self._launch(self.text, self.stem, use_file, self.display_path)

    @work(thread=True, group="launch")
    def _launch(self, text: str, stem: str, path: Path | None, shown: str) -> None:
        from sslterm.runs.queue import start_checked

        try:
            with tempfile.TemporaryDirectory(prefix="sslterm-launch-") as tmp:
                if path is None:
                    path = Path(tmp) / f"{stem}.toml"
                    path.write_text(text, encoding="utf-8")
                    run = start_checked(path, self.app.output_dir, meta=self.meta)
                else:
                    run = start_checked(path, self.app.output_dir, meta=self.meta)
        except ProfileError as exc:
            self.app.call_from_thread(self._launch_failed, exc.with_path(shown))
            return
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self._launch_failed, UserError(str(exc)))
            return
        self.app.call_from_thread(self._launched, run.id)

    def _launch_failed(self, err: UserError) -> None:
        self.launching = False
        self._show_error(err)
        notify_plain(self, str(err), title="not started", severity="error", timeout=10)

    async def _launched(self, run_id: str) -> None:
        self.launching = False
        notify_plain(self, f"started {run_id}")
        self.app.want_selected = run_id
        self.app.poll()
        await self.app.switch_mode("runs")

    def action_edit_meta(self) -> None:
        """The label, tags and note of the runs launched or queued from here."""
        from sslterm.runs.meta import make_meta
        from sslterm.tui.screens.dialogs import MetaScreen

        def edited(values: tuple[str, str, str] | None) -> None:
            if values is None:
                return
            label, tags, note = values
            try:
                self.meta = make_meta(label, tags.replace(",", " ").split(), note)
            except UserError as exc:
                notify_plain(self, str(exc), severity="error", timeout=8)
                return
            self._refresh()

        self.app.push_screen(
            MetaScreen("the next run", self.meta.label, self.meta.tags, self.meta.note), edited)

    def action_enqueue(self) -> None:
        if self._refuse_invalid():
            return
        from sslterm.runs.queue import enqueue, pending

        try:
            enqueue(self.app.output_dir, self.text, self.stem, source=self.display_path,
                    meta=self.meta)
        except UserError as exc:
            notify_plain(self, str(exc), severity="error", timeout=8)
            return
        n = len(pending(self.app.output_dir))
        notify_plain(self, f"queued {self.stem} ({n} waiting; press 4 for the queue)")
