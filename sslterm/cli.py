"""The ``sslterm`` command. Heavy modules (torch, timm, textual) load lazily, per command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sslterm import __version__
from sslterm.errors import UserError

if TYPE_CHECKING:
    from sslterm.profile.schema import ProbeConfig
    from sslterm.runs.store import RunDir
    from sslterm.runs.summary import RunSummary

OVERRIDE = re.compile(r"[A-Za-z_][\w.-]*=.*", re.DOTALL)
SERVE_INSTALL = 'pip install textual-serve (in a clone: pip install -e ".[serve]")'


# -- parsing ------------------------------------------------------------------------------
def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", help="profile TOML file")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. simclr.temperature=0.2 (anywhere on the line)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override (repeatable)")


def _meta_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", default="", metavar="NAME",
                   help="what legends and tables call the run (default: its id)")
    p.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG",
                   help="a tag (repeatable)")
    p.add_argument("--note", default="", metavar="TEXT", help="a note on the run")


def _paper_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", dest="labels", action="append", default=[], metavar="RUN=NAME",
                   help="a run's name in the legend (default: its label, else its id)")
    p.add_argument("--title", default="", help="the figure's title")
    p.add_argument("--size", default="column", choices=("column", "page"),
                   help="one column (3.5 in, default) or the full width (7 in) of a "
                   "two-column paper")


def _label_overrides(items: Sequence[str], output_dir: str) -> dict[str, str]:
    """``--label RUN=NAME`` options as run id -> name (RUN: an id or unique prefix)."""
    from sslterm.runs.meta import check_label
    from sslterm.runs.store import find_run

    out = {}
    for item in items:
        ref, sep, name = item.partition("=")
        if not sep or not ref or not name.strip():
            raise UserError(f"<command line>: --label {item}: write RUN=NAME")
        out[find_run(ref, output_dir).id] = check_label(name, f"--label {item}")
    return out


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run id, id prefix or run directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslterm",
        description="Train self-supervised image encoders (SimCLR, BYOL, MoCo v3, SimSiam, "
        "Barlow Twins, VICReg, DINO) and watch them from the terminal. Without a command, "
        "opens the terminal app.",
    )
    parser.add_argument("--version", action="version", version=f"sslterm {__version__}")
    out_help = "folder of run directories (default: the profile's, else ./runs)"
    parser.add_argument("--output-dir", "-o", default=None, help=out_help)
    # the same option after the command; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output-dir", "-o", default=argparse.SUPPRESS, help=out_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=text, description=text, parents=[common])
        p.set_defaults(parser=p)
        return p

    run = command("run", "start a run from a profile and follow its progress")
    _profile_args(run)
    run.add_argument("--detach", "-d", action="store_true", help="print the run id and return")
    run.add_argument("--machine-rank", dest="machine_rank", type=int)
    run.add_argument("--num-machines", dest="num_machines", type=int)
    run.add_argument("--main-process-ip", dest="main_process_ip")
    run.add_argument("--main-process-port", dest="main_process_port", type=int)
    run.add_argument("--num-processes", dest="num_processes", type=int)
    _meta_args(run)

    prof = command("profile", "validate or show a profile")
    prof_sub = prof.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    for name, text in (("validate", "check a profile (schema, data paths, encoder)"),
                       ("show", "print the fully resolved profile")):
        _profile_args(command(name, text, prof_sub))

    runs = command("runs", "list runs")
    runs.add_argument("--json", action="store_true",
                      help="one JSON object per run, with its final metrics")
    runs.add_argument("--filter", metavar="EXPR",
                      help="only matching runs: words (in the id, label, tags, method, state, "
                      "profile), KEY=VALUE (label, tag, method, state, profile or a profile key "
                      "such as train.base_lr; * wildcards), KEY>N / < / >= / <= (linear, knn, "
                      "loss, epoch or a numeric profile key)")
    runs.add_argument("--sort", metavar="KEY",
                      help="order by created (default, newest first), id, label, state, method, "
                      "profile, linear, knn (best first), loss, epoch, ips or a profile key")
    runs.add_argument("--reverse", action="store_true", help="the other way round")
    for name, text in (("stop", "ask a run to stop gracefully (checkpoint, then exit)"),
                       ("resume", "continue a run from its newest complete checkpoint"),
                       ("follow", "follow a run's progress"),
                       ("kill", "kill a run's processes at once")):
        p = command(name, text)
        _run_arg(p)
        if name == "stop":
            p.add_argument("--wait", action="store_true", help="wait until the run has ended")
            p.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="wait at most this long, then kill the run (implies --wait)")
        if name == "resume":
            p.add_argument("--detach", "-d", action="store_true")
            p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    rm = command("rm", "delete a run directory (never one that is running)")
    _run_arg(rm)
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")

    feats = command("features", "export frozen features and encoder weights")
    _run_arg(feats)
    feats.add_argument("--checkpoint", help="checkpoint folder name (default: newest)")
    feats.add_argument("--out", help="output folder (default: RUN/features)")

    embed = command("embed", "project a run's exported features to 2-D (UMAP with umap-learn, "
                    "else PCA), coloured by class")
    _run_arg(embed)
    embed.add_argument("--method", default="auto", choices=("auto", "pca", "umap"),
                       help="auto (default): UMAP where umap-learn is installed, else PCA")
    embed.add_argument("--split", help="features of this split (default: test, else val, "
                       "else train)")
    embed.add_argument("--max-points", dest="max_points", type=int, default=2000,
                       help="a seeded sample of at most N features (default: 2000)")
    embed.add_argument("--seed", type=int, default=0, help="sample and UMAP seed (default: 0)")
    embed.add_argument("--out", metavar="FILE", help="also a figure: .svg, .png or .pdf")
    embed.add_argument("--title", default="", help="the figure's title")
    embed.add_argument("--size", default="column", choices=("column", "page"))

    views = command("views", "the views a profile's method trains on, as an image grid")
    _profile_args(views)
    views.add_argument("--images", type=int, default=8, metavar="N",
                       help="rows: the first N training images (default: 8)")
    views.add_argument("--seed", type=int, default=0, help="the augmentation's seed (default: 0)")
    views.add_argument("--out", required=True, metavar="FILE.png", help="the grid, a PNG")

    probe = command("probe", "linear probe + kNN on saved features")
    probe.add_argument("features", help="features folder, features.safetensors or a run")
    probe.add_argument("--profile", help="take probe.* settings from this profile")
    probe.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="probe override, e.g. probe.epochs=30")
    probe.add_argument("--seed", type=int,
                       help="probe seed (default: the run's train.seed, as in training)")
    probe.add_argument("--device", default="cpu")

    serve = command("serve", "serve the terminal app in a browser")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    slurm = command("slurm", "write (and submit) a Slurm batch script for a profile")
    _profile_args(slurm)
    slurm.add_argument("--nodes", type=int, default=None)
    slurm.add_argument("--gpus-per-node", dest="gpus_per_node", type=int, default=None)
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", default="24:00:00")
    slurm.add_argument("--submit", action="store_true")

    plot = command("plot", "draw one metric of one or more runs into an SVG, PNG or PDF figure")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="runs to overlay")
    plot.add_argument("--metric", "-m", default="loss",
                      help="series to draw: loss, val_loss, lr, ips, knn, linear, ... "
                      "(default: loss)")
    plot.add_argument("--x", default="step", choices=("step", "epoch", "time"),
                      help="x axis (default: step)")
    plot.add_argument("--smooth", type=float, default=0.0, metavar="W",
                      help="EMA weight in [0, 1) for noisy series (default: 0, raw values)")
    # not required=True: argparse's "required: --out" would not say that -o is the runs folder
    plot.add_argument("--out", metavar="FILE",
                      help="figure file: .svg, .png or .pdf (required; -o is the runs folder)")
    _paper_args(plot)
    plot.add_argument("--no-groups", dest="groups", action="store_false",
                      help="draw every run of a seed group apart (default: their mean in a "
                      "band of +- one std)")

    table = command("table", "final metrics of runs as a paper's table: mean +- std and n over "
                    "each seed group (runs that differ only in train.seed)")
    table.add_argument("runs", nargs="*", metavar="RUN",
                       help="runs (default: every run with results, or those --filter picks)")
    table.add_argument("--filter", metavar="EXPR", help="runs matching EXPR (as in sslterm runs)")
    table.add_argument("--metrics", default="linear,knn", metavar="M,M",
                       help="final metrics: linear, knn, ssl_val_loss, linear_eval.val_top1, "
                       "... (default: linear,knn)")
    table.add_argument("--format", default="md", choices=("md", "latex", "csv"))
    table.add_argument("--digits", type=int, default=2, help="decimals (default: 2)")
    table.add_argument("--out", metavar="FILE", help="output file (default: standard output)")
    table.add_argument("--label", dest="labels", action="append", default=[],
                       metavar="RUN=NAME", help="a run's (its group's) name in the table")
    table.add_argument("--no-groups", dest="groups", action="store_false",
                       help="one row per run")

    export = command("export", "write every series of a run's event log as CSV or JSON")
    _run_arg(export)
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--out", metavar="FILE", help="output file (default: standard output)")

    sweep = command("sweep", "queue one run per point of a grid of overrides, then show the "
                    "table of results")
    sweep.add_argument("profile", nargs="?", help="profile TOML file")
    sweep.add_argument("overrides", nargs="*", default=[], metavar="KEY=V1,V2,...",
                       help="values to sweep (one value: an override every run shares)")
    sweep.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="an override every run shares (repeatable)")
    sweep.add_argument("--parallel", "-j", type=int, default=1, metavar="N",
                       help="runs at once (default: 1)")
    sweep.add_argument("--detach", "-d", action="store_true",
                       help="print the sweep id and return (the queue runner goes on)")
    sweep.add_argument("--show", metavar="SWEEP", nargs="?", const="",
                       help="print a sweep's table (default: the newest) and return")
    sweep.add_argument("--sort", metavar="METRIC", help="sort by this final metric")
    _meta_args(sweep)

    search = command("search", "an Optuna search (TPE or random) over a space of profile keys, "
                     "trials through the queue, bad ones pruned early from their kNN curve")
    search.add_argument("profile", nargs="?", help="profile TOML file")
    search.add_argument("--space", metavar="SPACE.toml",
                        help="keys and their ranges: [train] base_lr = { low = 0.01, high = 1, "
                        "log = true }, batch_size = { choices = [64, 128] }")
    search.add_argument("--trials", type=int, default=20, help="trials in all (default: 20)")
    search.add_argument("--parallel", "-j", type=int, default=1, metavar="K",
                        help="trials at once (default: 1)")
    search.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an override every trial shares (repeatable)")
    search.add_argument("--metric", default="knn",
                        help="what trials are judged and pruned by: knn (default), linear, "
                        "val_loss, ... (a loss is minimised)")
    search.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    search.add_argument("--pruner", default="median", choices=("median", "none"),
                        help="median (default): stop a trial whose value at an epoch is worse "
                        "than the median of the completed trials' there")
    search.add_argument("--startup-trials", dest="startup", type=int, default=5, metavar="N",
                        help="completed trials before any is pruned (default: 5)")
    search.add_argument("--seed", type=int, help="the sampler's seed")
    search.add_argument("--resume", metavar="SEARCH", nargs="?", const="",
                        help="go on with a search (default: the newest) after an interruption")
    search.add_argument("--out", metavar="FIG", help="at the end, a parallel-coordinates figure")
    _meta_args(search)

    label = command("label", "show or change a run's label, tags and note")
    _run_arg(label)
    label.add_argument("label", nargs="?", metavar="NAME", help='the new label ("": none)')
    label.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG",
                       help="add a tag (repeatable)")
    label.add_argument("--untag", action="append", default=[], metavar="TAG",
                       help="remove a tag (repeatable)")
    label.add_argument("--note", metavar="TEXT", help='the new note ("": none)')
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options and KEY=VALUE overrides in any order: argparse stops filling a positional
    list at the first option, so the overrides it leaves over are collected here."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    command = getattr(args, "parser", parser)
    into = next((name for name in ("overrides", "sets") if hasattr(args, name)), None)
    unknown = [a for a in extras if not (into and OVERRIDE.fullmatch(a))]
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if into:
        setattr(args, into, [*getattr(args, into), *extras])
    return args


# -- commands -----------------------------------------------------------------------------
def _output_dir(args: argparse.Namespace) -> str:
    return args.output_dir or "./runs"


def _launch_overrides(args: argparse.Namespace) -> list[str]:
    out = [*args.overrides, *args.sets]
    for flag, key in (("machine_rank", "launch.machine_rank"),
                      ("num_machines", "launch.num_machines"),
                      ("main_process_ip", "launch.main_process_ip"),
                      ("main_process_port", "launch.main_process_port"),
                      ("num_processes", "launch.num_processes"),
                      ("output_dir", "launch.output_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from sslterm.profile.load import load_profile
    from sslterm.runs.launcher import start_run, wait_started

    run = start_run(args.profile, _launch_overrides(args), output_dir=args.output_dir,
                    meta=_meta(args))
    _warmup_note(load_profile(args.profile, _launch_overrides(args)))  # as written, not frozen
    if args.detach:
        print(run.id)
        return 0
    from sslterm.runs.follow import follow

    wait_started(run)
    return follow(run)


def _meta(args: argparse.Namespace) -> Any:
    """The launch options' checked label, tags and note (a RunMeta)."""
    from sslterm.runs.meta import make_meta

    return make_meta(args.label, args.tags, args.note)


def cmd_search(args: argparse.Namespace) -> int:
    from sslterm.runs import search as searches
    from sslterm.runs.sweep import find_sweep, list_sweeps

    if args.resume is not None:
        out = _output_dir(args)
        if args.resume:
            found = find_sweep(args.resume, out)
        else:
            found = next((s for s in reversed(list_sweeps(out)) if s.kind == "search"), None)
            if found is None:
                raise UserError(f"no search under {out}")
    else:
        if args.profile is None or args.space is None:
            args.parser.error("a profile and --space SPACE.toml are needed (or --resume)")
        from sslterm.profile.load import load_profile

        out = args.output_dir or load_profile(args.profile, args.sets).launch.output_dir
        found = searches.create_search(
            out, args.profile, args.space, trials=args.trials, parallel=args.parallel,
            fixed=args.sets, metric=args.metric, sampler=args.sampler, pruner=args.pruner,
            startup=args.startup, seed=args.seed, meta=_meta(args))
    driver = searches.Driver(out, found, say=lambda line: print(line, flush=True))
    print(f"search {found.id}: {driver.data['trials']} trials, {driver.data['parallel']} at a "
          f"time, by {driver.data['metric']} ({driver.data['sampler']}, pruner "
          f"{driver.data['pruner']})", flush=True)
    try:
        driver.run()
    except KeyboardInterrupt:
        print(f"\nstopped the search; queued trials go on: sslterm -o {out} search --resume "
              f"{found.id}", file=sys.stderr)
        return 130
    _print_sweep(driver.sweep, out, None, driver.data["metric"])
    best = searches.best_trials(driver.study, 1)
    if best:
        params = " ".join(f"{k}={v}" for k, v in best[0].params.items())
        print(f"best: trial {best[0].number}, {driver.data['metric']} {best[0].value:.4g}: "
              f"{params}")
    if args.out:
        from sslterm.report.search import save_parallel_coordinates

        print(f"wrote {save_parallel_coordinates(driver.study, args.out, driver.data['metric'])}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from sslterm.runs.meta import edit_meta, read_meta
    from sslterm.runs.store import find_run

    run = find_run(args.run, _output_dir(args))
    if args.label is None and not args.tags and not args.untag and args.note is None:
        meta = read_meta(run)
    else:
        meta = edit_meta(run, label=args.label, add=args.tags, remove=args.untag,
                         note=args.note)
    print(f"{run.id}: label {meta.label or '(none)'} · tags {', '.join(meta.tags) or '(none)'}"
          f" · note {meta.note or '(none)'}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from sslterm.profile.load import load_profile, resolved_toml

    overrides = [*args.overrides, *args.sets]
    profile = load_profile(args.profile, overrides)
    if args.profile_command == "show":
        sys.stdout.write(resolved_toml(profile))
        return 0
    from sslterm.runs.launcher import check_profile_environment
    from sslterm.runs.summary import plural

    check_profile_environment(profile, args.profile, overrides)
    print(f"{args.profile}: ok ({profile.model.method} / {profile.model.encoder} on "
          f"{profile.data.dataset}, {plural(profile.train.epochs, 'epoch')})")
    _warmup_note(profile)
    return 0


def _warmup_note(profile: Any) -> None:
    """The one line that says a run is all warmup (:func:`sslterm.train.schedule.warmup_note`),
    on stderr: ``run --detach`` prints only the run id on stdout."""
    from sslterm.train.schedule import warmup_note

    note = warmup_note(profile.train)
    if note:
        print(note, file=sys.stderr, flush=True)


def run_record(run: RunDir, summary: RunSummary | None = None) -> dict[str, Any]:
    """What ``sslterm runs --json`` says about one run: its true state, progress (``epoch``:
    epochs completed) and the final metrics of results.json (null until it has finished).
    ``summary``: the run's, already read."""
    from sslterm.runs.scheduler import run_state
    from sslterm.runs.summary import RunSummary

    if summary is None:
        summary = RunSummary(run)
        summary.update()
    state, error = run_state(run)
    status = run.read_status()
    try:
        final = json.loads(run.results.read_text(encoding="utf-8")).get("final")
    except (FileNotFoundError, ValueError):
        final = None
    return {
        "id": run.id, "path": str(run.path), "state": state, "error": error,
        "profile": status.get("profile", ""), "method": summary.method,
        "label": summary.label, "tags": list(summary.tags), "note": summary.note,
        "created": status.get("created"),
        "started": status.get("started"), "ended": status.get("ended"),
        "epoch": summary.epoch, "epochs": summary.epochs, "step": summary.step,
        "final": final,
    }


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sslterm.runs.query import filter_runs, parse_filter, sort_runs
    from sslterm.runs.store import check_runs_folder, iter_runs
    from sslterm.runs.summary import RunSummary

    check_runs_folder(_output_dir(args))
    if args.filter:
        parse_filter(args.filter)  # a bad expression says so before any log is read
    summaries = [RunSummary(run) for run in iter_runs(_output_dir(args))]
    for summary in summaries:
        summary.update()
    if args.filter:
        summaries = filter_runs(summaries, args.filter)
    # newest first by default, as the app's runs table
    summaries = sort_runs(summaries, args.sort or "created", args.reverse)
    records = [run_record(s.run, s) for s in summaries]
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    id_width = max((len(r["id"]) for r in records), default=3)
    table = Table(box=None)
    table.add_column("run", no_wrap=True, min_width=id_width)
    labelled = any(r["label"] for r in records)
    tagged = any(r["tags"] for r in records)
    if labelled:
        table.add_column("label")
    for name in ("state", "epoch", "profile", "method", "created"):
        table.add_column(name, no_wrap=name != "profile")
    if tagged:
        table.add_column("tags")
    table.add_column("error", overflow="ellipsis")
    for r in records:
        epoch = "" if r["epoch"] is None else f"{r['epoch']}/{r['epochs'] or '?'}"
        table.add_row(r["id"], *([r["label"]] if labelled else []), r["state"], epoch,
                      r["profile"], r["method"], r["created"] or "",
                      *([", ".join(r["tags"])] if tagged else []), r["error"][:80])
    # piped: one line per run, however long (a terminal's width applies only to a terminal)
    Console(width=None if sys.stdout.isatty() else 10_000).print(table)
    return 0


def _wait_stopped(run: RunDir, timeout: float | None) -> int:
    """Wait for a stopping run to end; past ``timeout`` seconds kill it (exit code 1)."""
    import time

    from sslterm.runs import launcher
    from sslterm.runs.scheduler import run_state
    from sslterm.runs.store import ACTIVE

    deadline = None if timeout is None else time.monotonic() + timeout
    while run_state(run)[0] in ACTIVE:
        if deadline is not None and time.monotonic() > deadline:
            with contextlib.suppress(UserError):  # it ended just now
                launcher.kill_run(run)
            print(f"{run.id}: did not stop within {timeout:g} s: killed", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"{run.id}: {run_state(run)[0]}")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from sslterm.runs import launcher
    from sslterm.runs.store import find_run

    run = find_run(args.run, _output_dir(args))
    if args.command == "stop":
        if args.timeout is not None and not args.timeout > 0:
            raise UserError(f"stop --timeout: must be > 0 seconds (got {args.timeout:g})")
        launcher.request_stop(run)
        print(f"stop requested: {run.id}")
        if args.wait or args.timeout is not None:
            return _wait_stopped(run, args.timeout)
        return 0
    if args.command == "kill":
        launcher.kill_run(run)
        print(f"killed: {run.id}")
        return 0
    from sslterm.runs.follow import follow

    if args.command == "follow":
        return follow(run)
    from sslterm.runs.events import complete_length

    seen = complete_length(run.events)  # history: show only what this resume appends
    launcher.resume_run(run, args.sets)
    if args.detach:
        print(run.id)
        return 0
    launcher.wait_started(run)
    return follow(run, offset=seen)


def cmd_rm(args: argparse.Namespace) -> int:
    from sslterm.runs import launcher
    from sslterm.runs.store import find_run

    run = find_run(args.run, _output_dir(args))
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"rm {run.id}: add --yes to delete without a question")
        answer = input(f"Delete {run.id} and everything in {run.path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    launcher.delete_run(run)
    print(f"deleted: {run.id}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from sslterm.commands.features import export_run_features, pick_checkpoint
    from sslterm.runs.store import find_run

    run = find_run(args.run, _output_dir(args))
    checkpoint = pick_checkpoint(run, args.checkpoint)
    out = Path(args.out) if args.out else run.features
    path = export_run_features(run, checkpoint, out)
    meta = json.loads((path / "meta.json").read_text())
    print(f"wrote {path}: {meta['splits']} features of dim {meta['feature_dim']} "
          f"from {meta['checkpoint']}")
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    from sslterm.commands.views import save_grid, view_grid
    from sslterm.profile.load import load_profile

    profile = load_profile(args.profile, [*args.overrides, *args.sets])
    if not Path(args.out).suffix.lower() == ".png":
        raise UserError(f"{args.out}: the grid is written as PNG; name a .png file")
    if args.images < 1:
        raise UserError(f"--images must be at least 1 (got {args.images})")
    grid = view_grid(profile, args.images, args.seed)
    save_grid(grid, args.out)
    print(f"wrote {args.out}: {grid.images} images x {len(grid.views)} views "
          f"({profile.model.method}: {grid.plan})")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from sslterm.eval.embed import project, save_embedding
    from sslterm.report.plot import FORMATS
    from sslterm.runs.store import find_run

    run = find_run(args.run, _output_dir(args))
    if args.out and Path(args.out).suffix.lower() not in FORMATS:
        raise UserError(f"{args.out}: unknown figure format {Path(args.out).suffix or '(none)'!r}"
                        "; use .svg, .png or .pdf")
    if not (run.features / "features.safetensors").is_file():
        raise UserError(f"run {run.id} has no exported features; run: sslterm features {run.id}")
    embedding = project(run.features, args.method, args.split, args.max_points, args.seed)
    if args.out:
        from sslterm.report.embed import save_embedding_figure

        save_embedding_figure(embedding, args.out, args.title, args.size)
    path = save_embedding(run.features, embedding)
    print(f"wrote {path}: {embedding.method.upper()} of {len(embedding.labels)} of "
          f"{embedding.total} {embedding.split} features, {embedding.num_classes} classes"
          + (f"; figure {args.out}" if args.out else ""))
    return 0


def _features_path(ref: str, output_dir: str) -> tuple[Path, RunDir | None]:
    """The features to probe and the run they came from (None: made elsewhere)."""
    from sslterm.runs.store import RunDir, find_run

    path = Path(ref)
    if path.is_file() or (path / "features.safetensors").is_file():
        folder = path if path.is_dir() else path.parent
        owner = RunDir(folder.parent)
        return path, owner if owner.status_file.is_file() else None
    try:
        run = find_run(ref, output_dir)
    except UserError:
        raise UserError(f"{ref}: neither a features export nor a run") from None
    if not (run.features / "features.safetensors").is_file():
        raise UserError(f"run {run.id} has no exported features; run: sslterm features {run.id}")
    return run.features, run


def probe_settings(args: argparse.Namespace, run: RunDir | None) -> tuple[ProbeConfig, int]:
    """probe.* and the seed, by default the run's own, so the probe repeats the run's final
    linear eval exactly; ``--profile``, ``--set`` and ``--seed`` change them."""
    from sslterm.profile.load import load_profile, validate_text

    overrides = list(args.sets)
    for item in overrides:
        if not item.startswith("probe."):
            raise UserError(f"--set {item}: only probe.* keys apply to saved features")
    if args.profile:
        profile = load_profile(args.profile, overrides)
    elif run is not None:
        profile = load_profile(run.profile, overrides)
    else:
        profile = validate_text("", "<defaults>", overrides)
    run_seed = load_profile(run.profile).train.seed if run is not None else profile.train.seed
    return profile.probe, run_seed if args.seed is None else args.seed


def _fmt(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    return f"{metrics['top1']:.2f} / {metrics['top5']:.2f}"


def cmd_probe(args: argparse.Namespace) -> int:
    from sslterm.eval.offline import probe_features
    from sslterm.files import atomic_write_text
    from sslterm.runs.summary import plural

    path, run = _features_path(args.features, _output_dir(args))
    cfg, seed = probe_settings(args, run)
    results = probe_features(path, cfg, seed=seed, device=args.device)
    folder = path if path.is_dir() else path.parent
    atomic_write_text(folder / "probe-results.json", json.dumps(results, indent=2) + "\n")
    lin, knn = results["linear"], results.get("knn") or {}
    print(f"linear probe ({plural(lin['epochs'], 'epoch')}, batch {lin['batch_size']}, seed {seed}), "
          "top-1 / top-5 %:")
    for split in ("train", "val", "test"):
        if split in lin:
            print(f"  {split:<5} {_fmt(lin[split])}")
    if knn:
        print(f"kNN (k={knn['k']}, T={knn['temperature']}), top-1 / top-5 %:")
        for split in ("val", "test"):
            if split in knn:
                print(f"  {split:<5} {_fmt(knn[split])}")
    print(f"wrote {folder / 'probe-results.json'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import textual_serve  # noqa: F401 - only to say how to install it
    except ImportError:
        raise UserError(f"serve needs textual-serve, which is not installed: {SERVE_INSTALL}") from None
    from sslterm.tui.serve import serve

    return serve(host=args.host, port=args.port, output_dir=_output_dir(args)) or 0


def cmd_slurm(args: argparse.Namespace) -> int:
    from sslterm.runs.slurm import cmd_slurm as write_job

    return write_job(args)


def cmd_app(args: argparse.Namespace) -> int:
    from sslterm.runs.store import check_runs_folder
    from sslterm.tui.app import run_app

    check_runs_folder(_output_dir(args))
    return run_app(output_dir=_output_dir(args))


def _plot_out_missing(output_dir: str | None) -> str:
    """``plot RUN -o fig.svg`` (the usual spelling elsewhere) names the runs folder here: say
    which option is which."""
    from sslterm.report.plot import FORMATS

    if output_dir and Path(output_dir).suffix.lower() in FORMATS:
        return f"plot: -o {output_dir}: -o is the runs folder; give the figure as --out {output_dir}"
    return "plot: the figure file is missing: --out FILE (.svg, .png or .pdf); -o is the runs folder"


def cmd_plot(args: argparse.Namespace) -> int:
    from sslterm.report.plot import save_figure
    from sslterm.runs.store import find_run

    if args.out is None:
        raise UserError(_plot_out_missing(args.output_dir))
    if not 0.0 <= args.smooth < 1.0:
        raise UserError(f"<command line>: --smooth: must be in [0, 1) (got {args.smooth:g})")
    runs = [find_run(ref, _output_dir(args)) for ref in args.runs]
    labels = _label_overrides(args.labels, _output_dir(args))
    path = save_figure(runs, args.metric, args.x, args.out, smoothing=args.smooth,
                       labels=labels, title=args.title, size=args.size, groups=args.groups)
    print(f"wrote {path}")
    return 0


def _pick_runs(refs: Sequence[str], expr: str | None, output_dir: str) -> list[RunSummary]:
    """The runs named (all under the folder when none is), less those ``expr`` filters out;
    read, newest first."""
    from sslterm.runs.query import filter_runs, parse_filter
    from sslterm.runs.store import check_runs_folder, find_run, iter_runs
    from sslterm.runs.summary import RunSummary, newest_first

    if expr:
        parse_filter(expr)
    check_runs_folder(output_dir)
    runs = [find_run(r, output_dir) for r in refs] if refs else list(iter_runs(output_dir))
    summaries = [RunSummary(run) for run in dict.fromkeys(runs)]
    for s in summaries:
        s.update()
    if expr:
        summaries = filter_runs(summaries, expr)
    if not summaries:
        raise UserError(f"no runs{' match ' + repr(expr) if expr else ''} under {output_dir}")
    return summaries if refs else newest_first(summaries)


def _write_or_print(text: str, out: str | None) -> None:
    """A report to ``--out`` (its folder made, written whole) or, without one, to stdout."""
    if out:
        from sslterm.files import write_output

        write_output(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_table(args: argparse.Namespace) -> int:
    from sslterm.report.table import render, table_rows

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        raise UserError("<command line>: --metrics: name at least one metric")
    if args.digits < 0:
        raise UserError(f"<command line>: --digits: must be >= 0 (got {args.digits})")
    labels = _label_overrides(args.labels, _output_dir(args))
    summaries = _pick_runs(args.runs, args.filter, _output_dir(args))
    rows, skipped = table_rows(summaries, metrics, labels, args.groups)
    if skipped:
        print(f"left out (no results yet): {', '.join(skipped)}", file=sys.stderr)
    splits = {s.linear_split for s in summaries if s.linear_split}
    text = render(rows, metrics, args.format, splits, args.digits)
    _write_or_print(text, args.out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sslterm.report.export import export_run
    from sslterm.runs.store import find_run

    text = export_run(find_run(args.run, _output_dir(args)), args.format)
    _write_or_print(text, args.out)
    return 0


def _print_sweep(sweep: Any, output_dir: str, metric: str | None,
                 prefer: str | None = None) -> None:
    """The sweep's (or search's) table, sorted by ``metric``, else ``prefer`` where rows have
    it, else the default."""
    from rich.console import Console

    from sslterm.report.sweep_table import default_sort, metric_names, render, sweep_rows
    from sslterm.runs.sweep import sweep_status

    rows = sweep_rows(sweep_status(sweep, output_dir))
    if metric is not None and metric not in metric_names(rows):
        have = ", ".join(metric_names(rows)) or "none yet"
        raise UserError(f"--sort {metric}: no run of the sweep has it (they have: {have})")
    if metric is None and prefer in metric_names(rows):
        metric = prefer
    Console(width=None if sys.stdout.isatty() else 10_000).print(
        render(sweep, rows, metric or default_sort(rows)))


def _wait_sweep(sweep: Any, output_dir: str) -> None:
    """Print each point's state as it changes until every point has ended."""
    import time

    from sslterm.runs.sweep import finished, sweep_status

    seen: dict[int, str] = {}
    while True:
        points = sweep_status(sweep, output_dir)
        for p in points:
            if seen.get(p.index) != p.state:
                seen[p.index] = p.state
                run = f" {p.run.id}" if p.run else ""
                error = f": {p.error}" if p.error and p.state == "failed" else ""
                print(f"{p.name}:{run} {p.state}{error}", flush=True)
        if finished(points):
            return
        time.sleep(1.0)


def cmd_sweep(args: argparse.Namespace) -> int:
    from sslterm.runs import sweep as sweeps
    from sslterm.runs.summary import plural

    if args.show is not None:
        out = _output_dir(args)
        _print_sweep(sweeps.find_sweep(args.show or None, out), out, args.sort)
        return 0
    if args.profile is None:
        args.parser.error("a profile is needed (or --show)")
    from sslterm.profile.load import load_profile

    out = args.output_dir or load_profile(args.profile, args.sets).launch.output_dir
    sweep = sweeps.create_sweep(out, args.profile, sweeps.parse_axes(args.overrides), args.sets,
                                args.parallel, meta=_meta(args))
    if args.detach:
        print(sweep.id)
        return 0
    print(f"sweep {sweep.id}: {plural(len(sweep.points), 'run')} queued ({args.parallel} at a time)",
          flush=True)
    try:
        _wait_sweep(sweep, out)
    except KeyboardInterrupt:
        print(f"\nstopped watching; the queue runner goes on: sslterm -o {out} sweep --show "
              f"{sweep.id}", file=sys.stderr)
        return 130
    _print_sweep(sweep, out, args.sort)
    return 0


HANDLERS = {
    None: cmd_app, "run": cmd_run, "profile": cmd_profile, "runs": cmd_runs,
    "stop": cmd_control, "kill": cmd_control, "resume": cmd_control, "follow": cmd_control,
    "rm": cmd_rm, "features": cmd_features, "probe": cmd_probe, "serve": cmd_serve,
    "slurm": cmd_slurm, "plot": cmd_plot, "export": cmd_export, "sweep": cmd_sweep,
    "label": cmd_label, "table": cmd_table, "embed": cmd_embed, "views": cmd_views, "search": cmd_search,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except UserError as exc:
        print(f"sslterm: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sslterm runs | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> NoReturn:
    """The ``sslterm`` command's process: :func:`main`, then a quick exit (``sslterm run``
    imports torch and timm)."""
    from sslterm.process import exit_process

    exit_process(main())


if __name__ == "__main__":
    entry()
