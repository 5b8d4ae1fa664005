"""One run in one place (enter on a run): where and how it ran, its final results by
protocol and the checkpoint they came from, checkpoints and exported features with
sizes, the command that reproduces it, its error, and the frozen profile with the
keys that differ from its source profile marked.

Everything is read from the run directory in a worker (sizes walk folders); the
source profile is ``status.json``'s ``source`` where the launcher recorded it, else
``<profiles>/<profile name>.toml``, resolved as a launch from it today would freeze it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from sslterm.errors import UserError
from sslterm.eval.embed import Embedding, project, saved_embedding
from sslterm.runs.summary import RunSummary, final_table
from sslterm.tui import format as fmt
from sslterm.tui.widgets.modebar import ModeBar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DIFF_MARK = "●"
EMBED_POINTS = 1000
"""Features the view projects itself when ``sslterm embed`` saved none (PCA: milliseconds)."""
EMBED_COLORS = ("red", "green", "blue", "orange", "magenta", "cyan", "yellow", "gray",
                "white", "violet")
SAME = object()
"""A key whose value the source profile shares (or no source profile to compare with)."""


@dataclass
class Details:
    """What the detail view shows, gathered off the UI thread."""

    status: dict[str, Any] = field(default_factory=dict)
    results: list[tuple[str, str, float]] = field(default_factory=list)
    results_checkpoint: str = ""
    checkpoints: list[tuple[str, int]] = field(default_factory=list)
    features: list[tuple[str, int]] = field(default_factory=list)
    profile: list[tuple[str, Any, Any]] = field(default_factory=list)
    """(dotted key, frozen value, the source profile's other value or :data:`SAME`)."""
    source: str = ""
    """The source profile compared against, or why there is none."""
    compared: bool = False
    """Whether the marks are against a source profile."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Every key's default (:func:`schema_defaults`)."""
    embedding: Embedding | None = None
    """The exported features in 2-D: ``sslterm embed``'s, else a PCA made here."""
    embedding_error: str = ""


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (a file: its size); 0 where it vanished."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _entries(folder: Path) -> list[tuple[str, int]]:
    if not folder.is_dir():
        return []
    return [(p.name, tree_size(p)) for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


def source_profile(status: dict[str, Any], profiles_dir: Path) -> Path | None:
    """The profile file the run was made from, where it can be found."""
    source = status.get("source")
    if source and Path(source).is_file():
        return Path(source)
    guess = profiles_dir / f"{status.get('profile') or ''}.toml"
    return guess if guess.is_file() else None


def profile_marks(
    frozen: dict[str, Any],
    source: dict[str, Any] | None,
    defaults: Mapping[str, Any] | None = None,
) -> list[tuple[str, Any, Any]]:
    """Each frozen key with the source profile's value (resolved) where that differs,
    else :data:`SAME`. A key the source lacks (another method's section, a key of an older
    layout) stands for its default (``defaults``): it differs, as ``None``, only where the
    frozen value is not the default."""
    from sslterm.profile.edit import flatten

    if source is None:
        return [(k, v, SAME) for k, v in flatten(frozen)]
    theirs = dict(flatten(source))
    defaults = defaults or {}
    out = []
    for key, value in flatten(frozen):
        if key in theirs:
            same = _same(theirs[key], value)
        else:
            same = key in defaults and _same(defaults[key], value)
        out.append((key, value, SAME if same else theirs.get(key)))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as TOML values (a tuple default and the list a file holds are the same)."""
    norm = lambda v: [norm(x) for x in v] if isinstance(v, (list, tuple)) else v  # noqa: E731
    return norm(a) == norm(b)


def schema_defaults() -> dict[str, Any]:
    """Every profile key's default (every method's section), as a profile file holds it;
    the keys of the layout before the method sections stand for [simclr]'s."""
    from sslterm.profile.edit import flatten
    from sslterm.profile.schema import LEGACY_MODEL_KEYS, Profile

    defaults = dict(flatten(Profile().model_dump(mode="json")))
    for key in LEGACY_MODEL_KEYS:
        defaults.setdefault(f"model.{key}", defaults.get(f"simclr.{key}"))
    return defaults


def resolve_source(path: Path) -> dict[str, Any]:
    """The source profile as a launch from it now would freeze it (defaults written out,
    paths absolute from here)."""
    from sslterm.profile.load import frozen, frozen_data, load_profile

    return frozen_data(frozen(load_profile(path)), mode="json")


def gather(summary: RunSummary, profiles_dir: Path) -> Details:
    """Read everything the view shows from the run directory."""
    run = summary.run
    out = Details(status=run.read_status())
    try:
        results = json.loads((run.path / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = {}
    out.results = final_table(results)
    out.results_checkpoint = (
        str(results.get("checkpoint") or "") if isinstance(results, dict) else ""
    )
    out.checkpoints = _entries(run.checkpoints)
    out.features = _entries(run.path / "features")
    try:
        mine = tomllib.loads(run.profile.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        mine = {}
    source = source_profile(out.status, profiles_dir)
    theirs = None
    if source is None:
        out.source = f"no source profile found (looked for {profiles_dir}/{summary.profile}.toml)"
    else:
        try:
            theirs = resolve_source(source)
            out.source, out.compared = str(source), True
        except UserError as exc:
            out.source = f"{source} does not load: {exc}"
    out.defaults = schema_defaults()
    out.profile = profile_marks(mine, theirs, out.defaults)
    if (run.features / "features.safetensors").is_file():
        out.embedding = saved_embedding(run.features)
        if out.embedding is None:
            try:
                out.embedding = project(run.features, "pca", max_points=EMBED_POINTS)
            except UserError as exc:
                out.embedding_error = str(exc)
    return out


def draw_embedding(plot: PlotextPlot, embedding: Embedding) -> None:
    """The projection as a plotext scatter, a colour per class (named up to ten)."""
    plt = plot.plt
    plt.clear_data()
    plt.clear_figure()
    classes = sorted(set(embedding.labels))
    for i, c in enumerate(classes):
        xs = [p[0] for p, label in zip(embedding.points, embedding.labels, strict=True)
              if label == c]
        ys = [p[1] for p, label in zip(embedding.points, embedding.labels, strict=True)
              if label == c]
        named = {"label": f"class {c}"} if len(classes) <= 10 else {}
        plt.scatter(xs, ys, marker="braille", color=EMBED_COLORS[i % len(EMBED_COLORS)],
                    **named)
    plt.title(f"{embedding.method.upper()} of {len(embedding.labels)} of {embedding.total} "
              f"{embedding.split} features, by class")
    plt.xticks([])
    plt.yticks([])
    plot.refresh()


def _theirs(key: str, theirs: Any, defaults: Mapping[str, Any]) -> str:
    """The source's side of a differing key: its value, or that it leaves the key unset."""
    from sslterm.profile.edit import format_value

    if theirs is not None:
        return format_value(theirs)
    if key in defaults:
        return f"not set, default {format_value(defaults[key]) or '(empty)'}"
    return "not set"


def reproduce_command(summary: RunSummary) -> str:
    """A fresh run of the same frozen profile (every key and path in it)."""
    return f"sslterm run {shlex.quote(str(summary.run.profile))}"


def render(summary: RunSummary, d: Details) -> dict[str, str]:
    """The view's sections as rich markup, by widget id."""
    s = summary
    where = [
        f"[b]{escape(s.id)}[/b]  {s.state}  {escape(s.method or '—')} · "
        f"{escape(s.encoder or '—')} on {escape(s.dataset or '—')}",
        f"host {escape(str(d.status.get('host') or '—'))} · world size {s.world_size or '—'}"
        f" · devices {escape(', '.join(s.devices) or '—')}",
        f"created {fmt.started(s.created)} · trained {fmt.duration(s.duration())}"
        f" · epoch {fmt.epochs(s.epoch, s.epochs)}"
        + (f" · ETA {fmt.duration(s.eta())}" if s.alive else ""),
        f"reproduce: [b]{escape(reproduce_command(s))}[/b]",
    ]
    if s.label or s.tags or s.note:
        where.insert(1, f"label [b]{escape(s.label or '—')}[/b] · tags "
                        f"{escape(', '.join(s.tags) or '—')}"
                        + (f"\nnote: {escape(s.note)}" if s.note else ""))
    error = ""
    if s.state == "failed" or s.error:
        error = f"[b]error[/b]: {escape(s.error or 'no error summary')}"
        if s.traceback:
            error += "\n" + escape(s.traceback.rstrip())
    results = "[b]final results[/b]"
    if d.results:
        origin = d.results_checkpoint or "no checkpoint recorded"
        results += f" (from {escape(origin)})\n" + "\n".join(
            f"  {escape(proto):<14} {escape(metric):<12} {fmt.number(v)}"
            for proto, metric, v in d.results
        )
    else:
        results += ": none yet" if s.alive else ": none (no results.json)"
    files = "[b]checkpoints[/b]\n" + (
        "\n".join(
            f"  {escape(n)}  {fmt.size(b)}"
            + (
                "  ← final results"
                if d.results and f"checkpoints/{n}" == d.results_checkpoint
                else ""
            )
            for n, b in d.checkpoints
        )
        or "  none"
    )
    files += "\n[b]exported features[/b]\n" + (
        "\n".join(f"  {escape(n)}  {fmt.size(b)}" for n, b in d.features)
        or f"  none (sslterm features {escape(s.id)})"
    )
    if d.embedding_error:
        files += f"\n  no embedding: {escape(d.embedding_error)}"
    from sslterm.profile.edit import format_value

    changed = sum(1 for *_, theirs in d.profile if theirs is not SAME)
    profile = (
        f"[b]frozen profile[/b] ({DIFF_MARK} {fmt.plural(changed, 'key')}"
        f" {'differs' if changed == 1 else 'differ'} from {escape(d.source)})\n"
        if d.compared
        else f"[b]frozen profile[/b] ({escape(d.source)})\n"
    )
    profile += "\n".join(
        f"  {escape(key)} = {escape(format_value(value))}"
        if theirs is SAME
        else f"[b]{DIFF_MARK} {escape(key)} = {escape(format_value(value))}[/b]"
        f"  [dim](source: {escape(_theirs(key, theirs, d.defaults))})[/dim]"
        for key, value, theirs in d.profile
    )
    return {
        "detail-where": "\n".join(where),
        "detail-error": error,
        "detail-results": results,
        "detail-files": files,
        "detail-profile": profile,
    }


class DetailScreen(Screen):
    """Pushed over the runs view; escape goes back."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, summary: RunSummary) -> None:
        super().__init__()
        self.summary = summary
        self.details: Details | None = None

    def compose(self) -> ComposeResult:
        bar = ModeBar("runs")
        bar.note = f"{self.summary.id} · details (escape: back)"
        yield bar
        with VerticalScroll(id="detail-body"):
            for name in ("where", "error", "results", "files"):
                yield Static("…" if name == "where" else "", id=f"detail-{name}")
            yield PlotextPlot(id="detail-embed")
            yield Static(id="detail-profile")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#detail-body").focus()
        self._load()

    @work(thread=True, exclusive=True)
    def _load(self) -> None:
        try:
            details = gather(self.summary, self.app.profiles_dir)
        except OSError as exc:  # the run directory went away while it was read
            self.app.call_from_thread(self.notify, f"cannot read {self.summary.run.path}: {exc}",
                                      severity="error")  # fmt: skip
            return
        self.app.call_from_thread(self._show, details)

    def _show(self, details: Details) -> None:
        self.details = details
        for wid, text in render(self.summary, details).items():
            widget = self.query_one(f"#{wid}", Static)
            widget.update(text)
            widget.display = bool(text)
        plot = self.query_one("#detail-embed", PlotextPlot)
        plot.display = details.embedding is not None
        if details.embedding is not None:
            draw_embedding(plot, details.embedding)
