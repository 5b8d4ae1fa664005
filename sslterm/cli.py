"""The ``sslterm`` command. Heavy modules (torch, timm, textual) load lazily, per command."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sslterm import __version__
from sslterm.errors import UserError

if TYPE_CHECKING:
    from sslterm.runs.store import RunDir


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", help="profile TOML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. model.temperature=0.2")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override (repeatable)")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslterm",
        description="Train self-supervised image encoders (SimCLR) and watch them from the "
        "terminal. Without a command, opens the terminal app.",
    )
    parser.add_argument("--version", action="version", version=f"sslterm {__version__}")
    parser.add_argument("--output-dir", "-o", default=None,
                        help="folder of run directories (default: the profile's, else ./runs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start a run from a profile and follow its progress")
    _profile_args(run)
    run.add_argument("--detach", "-d", action="store_true", help="print the run id and return")
    run.add_argument("--machine-rank", dest="machine_rank", type=int)
    run.add_argument("--num-machines", dest="num_machines", type=int)
    run.add_argument("--main-process-ip", dest="main_process_ip")
    run.add_argument("--main-process-port", dest="main_process_port", type=int)
    run.add_argument("--num-processes", dest="num_processes", type=int)

    prof = sub.add_parser("profile", help="validate or show a profile")
    prof_sub = prof.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    for name, text in (("validate", "check a profile (schema, data paths, encoder)"),
                       ("show", "print the fully resolved profile")):
        _profile_args(prof_sub.add_parser(name, help=text))

    sub.add_parser("runs", help="list runs")
    for name, text in (("stop", "ask a run to stop gracefully (checkpoint, then exit)"),
                       ("resume", "continue a run from its newest complete checkpoint"),
                       ("follow", "follow a run's progress"),
                       ("kill", "kill a run's processes at once")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", help="run id, id prefix or run directory")
        if name == "stop":
            p.add_argument("--wait", action="store_true", help="wait until the run has ended")
            p.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="wait at most this long, then kill the run (implies --wait)")
        if name == "resume":
            p.add_argument("--detach", "-d", action="store_true")
            p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")

    feats = sub.add_parser("features", help="export frozen features and encoder weights")
    feats.add_argument("run")
    feats.add_argument("--checkpoint", help="checkpoint folder name (default: newest)")
    feats.add_argument("--out", help="output folder (default: RUN/features)")

    probe = sub.add_parser("probe", help="linear probe + kNN on saved features")
    probe.add_argument("features", help="features folder, features.safetensors or a run")
    probe.add_argument("--profile", help="take probe.* settings from this profile")
    probe.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="probe override, e.g. probe.epochs=30")
    probe.add_argument("--device", default="cpu")

    serve = sub.add_parser("serve", help="serve the terminal app in a browser")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    slurm = sub.add_parser("slurm", help="write (and submit) a Slurm batch script for a profile")
    _profile_args(slurm)
    slurm.add_argument("--nodes", type=int, default=None)
    slurm.add_argument("--gpus-per-node", dest="gpus_per_node", type=int, default=None)
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", default="24:00:00")
    slurm.add_argument("--submit", action="store_true")
    return parser


def _output_dir(args: argparse.Namespace) -> str:
    return args.output_dir or "./runs"


def cmd_run(args: argparse.Namespace) -> int:
    from sslterm.runs.launcher import start_run, wait_started

    run = start_run(args.profile, _launch_overrides(args), output_dir=args.output_dir)
    if args.detach:
        print(run.id)
        return 0
    from sslterm.runs.follow import follow

    wait_started(run)
    return follow(run)


def cmd_profile(args: argparse.Namespace) -> int:
    from sslterm.profile.load import load_profile, resolved_toml

    overrides = [*args.overrides, *args.sets]
    profile = load_profile(args.profile, overrides)
    if args.profile_command == "show":
        sys.stdout.write(resolved_toml(profile))
        return 0
    from sslterm.runs.launcher import check_profile_environment

    check_profile_environment(profile, args.profile, overrides)
    print(f"{args.profile}: ok ({profile.model.method} / {profile.model.encoder} on "
          f"{profile.data.dataset}, {profile.train.epochs} epochs)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sslterm.runs.store import iter_runs

    table = Table("run", "state", "profile", "created", "error", box=None)
    for run in iter_runs(_output_dir(args)):
        status = run.read_status()
        state, error = run.state()
        table.add_row(run.id, state, status.get("profile", ""), status.get("created", ""),
                      error[:80])
    Console().print(table)
    return 0


def _wait_stopped(run: RunDir, timeout: float | None) -> int:
    """Wait for a stopping run to end; past ``timeout`` seconds kill it (exit code 1)."""
    import time

    from sslterm.runs import launcher
    from sslterm.runs.store import ACTIVE

    deadline = None if timeout is None else time.monotonic() + timeout
    while run.state()[0] in ACTIVE:
        if deadline is not None and time.monotonic() > deadline:
            with contextlib.suppress(UserError):  # it ended just now
                launcher.kill_run(run)
            print(f"{run.id}: did not stop within {timeout:g} s: killed", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"{run.id}: {run.state()[0]}")
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
    if args.command == "resume":
        launcher.resume_run(run, args.sets)
        if args.detach:
            print(run.id)
            return 0
    from sslterm.runs.follow import follow

    launcher.wait_started(run)
    return follow(run)


def cmd_app(args: argparse.Namespace) -> int:
    from sslterm.tui.app import run_app

    return run_app(output_dir=_output_dir(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        None: cmd_app, "run": cmd_run, "profile": cmd_profile, "runs": cmd_runs,
        "stop": cmd_control, "kill": cmd_control, "resume": cmd_control, "follow": cmd_control,
    }
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        if args.command == "features":
            from sslterm.eval.commands import cmd_features

            return cmd_features(args)
        if args.command == "probe":
            from sslterm.eval.commands import cmd_probe

            return cmd_probe(args)
        if args.command == "serve":
            from sslterm.tui.serve import serve

            return serve(host=args.host, port=args.port, output_dir=_output_dir(args)) or 0
        if args.command == "slurm":
            from sslterm.runs.slurm import cmd_slurm

            return cmd_slurm(args)
        return 2
    except UserError as exc:
        print(f"sslterm: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
