"""``sslterm slurm``: a run as a Slurm batch job, one ``accelerate launch`` per node.

The run directory is created when the script is written, so the TUI lists the job
(``queued``) while Slurm holds it. On the batch host the script execs the run
supervisor around ``srun``, which starts one task per node; each task runs
``accelerate launch`` with its node's machine rank, and the supervisor records the
final status once srun has ended. Every value from a profile or a path is
shell-quoted, and the few command-line values that go into #SBATCH lines are checked
for form: the shell never interprets any of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from sslterm.errors import UserError
from sslterm.profile.load import load_profile
from sslterm.profile.schema import Profile
from sslterm.runs import scheduler
from sslterm.runs.launcher import check_profile_environment, create_run
from sslterm.runs.scheduler import SCRIPT_NAME
from sslterm.runs.store import RunDir, check_output_dir

# Recorded as launch.main_process_ip in the frozen profile: the real address is only
# known once Slurm has picked the nodes (the script asks scontrol for it).
SLURM_MAIN_HOST = "(first node of the Slurm job)"
# Seconds before the time limit at which Slurm sends SIGUSR1 to the batch script alone
# (``--signal=B:USR1@N``), which turns it into a stop request (STOP: checkpoint, then
# exit). A SIGTERM to every task would also reach torchrun's agents, which kill their
# workers 30 s later, whatever a checkpoint still had to write.
STOP_WARNING_S = 120
_TIME = re.compile(r"\d+(-\d+)?(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")
# Run on each node by srun. Fixed text: the node's rank and node count are expanded
# there, on the node; every other value arrives as a separate argument ("$@"), and $0
# is the Python interpreter.
_NODE_COMMAND = (
    'exec "$0" -m accelerate.commands.launch '
    '--machine_rank "$SLURM_NODEID" --num_machines "$SLURM_NNODES" "$@"'
)


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _job_name(profile: Profile) -> str:
    """Slurm job names end up in #SBATCH lines: keep them to harmless characters."""
    return "sslterm-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", profile.name).strip("-") or "run")


def node_resources(profile: Profile, processes: int) -> tuple[int, int]:
    """CPUs and GiB of memory of each node's task: ``launch.slurm_cpus_per_task`` and
    ``launch.slurm_mem_gb``, or derived from the ``processes`` per node and their data
    workers (without them a cluster with no default gives the task one CPU for all)."""
    la, workers = profile.launch, profile.data.num_workers
    cpus = la.slurm_cpus_per_task or processes * (workers + 1)
    mem = la.slurm_mem_gb or processes * (12 + 3 * workers)
    return cpus, mem


def _directives(
    profile: Profile, nodes: int, gpus_per_node: int, partition: str | None, time: str
) -> list[str]:
    cpus, mem = node_resources(profile, gpus_per_node)
    lines = [f"--job-name={_job_name(profile)}", f"--nodes={nodes}", "--ntasks-per-node=1",
             f"--cpus-per-task={cpus}", f"--mem={mem}G"]
    if not profile.launch.cpu:
        lines.append(f"--gpus-per-node={gpus_per_node}")
    lines.append(f"--time={time}")
    if partition:
        lines.append(f"--partition={partition}")
    lines.append(f"--signal=B:USR1@{STOP_WARNING_S}")
    if profile.launch.slurm_requeue:
        lines.append("--requeue")
    return [f"#SBATCH {line}" for line in lines]


def _launch_args(profile: Profile, nodes: int, gpus_per_node: int) -> list[str]:
    """Script lines after the node command: accelerate's options, then the trainer."""
    la, world = profile.launch, nodes * gpus_per_node
    lines = [f"--config_file {_q(la.accelerate_config)}"] if la.accelerate_config else []
    lines += [
        f"--num_processes {world}",  # accelerate counts processes over all machines
        '--main_process_ip "$MAIN_HOST"',
        f"--main_process_port {la.main_process_port}",
        f"--mixed_precision {_q(profile.train.precision)}",
        "--dynamo_backend no",
    ]
    if world > 1:
        lines.append("--multi_gpu")
    if nodes > 1:
        lines.append("--same_network")
    if la.cpu:
        lines.append("--cpu")
    elif la.gpu_ids != "all":
        lines.append(f"--gpu_ids {_q(la.gpu_ids)}")
    return [*lines, '-m sslterm.train "$RUN_DIR"']


def render_sbatch(
    profile: Profile,
    run_dir: Path,
    *,
    nodes: int,
    gpus_per_node: int,
    partition: str | None,
    time: str,
    workdir: str,
    python: str,
) -> str:
    """The batch script for ``run_dir``. ``workdir`` is where relative paths in the
    profile were meant (the job cds there); ``python`` runs sslterm on the nodes.
    Raw values never reach the script, not even in a comment (a newline would end it)."""
    _check_slurm_args(nodes, gpus_per_node, partition, time)
    launch = " \\\n    ".join(_launch_args(profile, nodes, gpus_per_node))
    cpus, mem = node_resources(profile, gpus_per_node)
    requeue = "yes" if profile.launch.slurm_requeue else "no"
    return "\n".join([
        "#!/bin/bash",
        f"# sslterm: {nodes} node(s) x {gpus_per_node} process(es), one accelerate launch per node.",
        "# Written by `sslterm slurm`. Submitted again after a stop or a failure, it",
        "# resumes the run from its newest complete checkpoint.",
        *_directives(profile, nodes, gpus_per_node, partition, time),
        "set -euo pipefail",
        f"cd -- {_q(workdir)}",
        f"PYTHON={_q(python)}",
        f"RUN_DIR={_q(run_dir)}",
        "export PYTHONUNBUFFERED=1",
        'exec >>"$RUN_DIR/stdout.log" 2>&1',
        "# Rendezvous on the first node of the job (node 0, where this script runs).",
        'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        "MAIN_HOST=${HOSTS%%$'\\n'*}",
        "# The supervisor holds the run's lock, marks it running and records the final",
        "# status once srun has ended; srun starts one accelerate launch per node.",
        '"$PYTHON" -m sslterm.runs.supervise "$RUN_DIR" -- \\',
        f"  srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 \\",
        f"  --cpus-per-task={cpus} --mem={mem}G \\",
        f"  bash -c {_q(_NODE_COMMAND)} \"$PYTHON\" \\",
        f"    {launch} &",
        "SUPERVISOR=$!",
        "# The time limit's warning (--signal=B:USR1) or a pre-emption's SIGTERM: the",
        "# supervisor turns SIGTERM into STOP; the trainer checkpoints and exits.",
        "SIGNALLED=no",
        "trap 'SIGNALLED=yes; kill -TERM \"$SUPERVISOR\" 2>/dev/null || true' USR1 TERM",
        "set +e",
        "# wait returns above 128 when a trapped signal interrupts it: wait again",
        'CODE=129; while [ "$CODE" -gt 128 ]; do wait "$SUPERVISOR"; CODE=$?; done',
        f"REQUEUE={requeue}",
        "# Stopped by a signal, not finished: run again (a requeued job resumes the run",
        "# from its newest complete checkpoint).",
        'if [ "$SIGNALLED" = yes ] && [ "$REQUEUE" = yes ] && [ "$CODE" = 0 ] && \\',
        '    "$PYTHON" -m sslterm.runs.scheduler requeue "$RUN_DIR" "${SLURM_JOB_ID:-}"; then',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$CODE"',
        "",
    ])


def _check_slurm_args(nodes: int, gpus_per_node: int, partition: str | None, time: str) -> None:
    """Job-shape values go into #SBATCH lines unquoted: accept only well-formed ones."""
    for flag, value in (("--nodes", nodes), ("--gpus-per-node", gpus_per_node)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1 (got {value})")
    if not _TIME.fullmatch(time):
        raise UserError(f"--time must be a Slurm time like 24:00:00 or 2-00:00:00 (got {time!r})")
    if partition is not None and not _PARTITION.fullmatch(partition):
        raise UserError(f"--partition must be a Slurm partition name (got {partition!r})")


def _job_profile(args: argparse.Namespace, overrides: list[str]) -> tuple[Profile, int, int]:
    """The profile as the job will run it: launch.* set to the job's shape, so the batch
    size is checked against the real world size and the frozen profile tells the truth."""
    base = load_profile(args.profile, overrides)
    nodes = args.nodes if args.nodes is not None else base.launch.num_machines
    gpus = args.gpus_per_node if args.gpus_per_node is not None else base.launch.num_processes
    _check_slurm_args(nodes, gpus, args.partition, args.time)
    shape = [f"launch.num_machines={nodes}", f"launch.num_processes={gpus}",
             "launch.machine_rank=0", f"launch.main_process_ip={json.dumps(SLURM_MAIN_HOST)}"]
    profile = load_profile(args.profile, [*overrides, *shape])
    if args.output_dir:
        check_output_dir(args.output_dir)
        profile.launch.output_dir = args.output_dir
    return profile, nodes, gpus


def submit_run(run: RunDir) -> str:
    """Submit the run's batch script and record the job id; a refused job marks the
    run failed with sbatch's message."""
    try:
        job = scheduler.submit(run.path / SCRIPT_NAME)
    except UserError as exc:
        run.update_status(state="failed", error=str(exc))
        raise UserError(f"run {run.id}: {exc}") from None
    run.update_status(state="queued", slurm_job_id=job)
    return job


def cmd_slurm(args: argparse.Namespace) -> int:
    """Write RUN_DIR/slurm.sbatch for the profile; with ``--submit`` also submit it."""
    overrides = [*args.overrides, *args.sets]
    profile, nodes, gpus = _job_profile(args, overrides)
    if args.submit and shutil.which("sbatch") is None:
        raise UserError("--submit needs Slurm's sbatch, which is not on PATH")
    check_profile_environment(profile, args.profile, overrides)
    run = create_run(profile)
    script = run.path / SCRIPT_NAME
    script.write_text(render_sbatch(
        profile, run.path.absolute(), nodes=nodes, gpus_per_node=gpus,
        partition=args.partition, time=args.time, workdir=os.getcwd(), python=sys.executable,
    ), encoding="utf-8")
    script.chmod(0o755)
    print(f"run {run.id} (queued): {script}")
    if not args.submit:
        print(f"submit with: sslterm resume {run.id}  (records the Slurm job id; a job "
              "submitted with sbatch by hand is not known to stop, kill or rm)")
        return 0
    job = submit_run(run)
    print(f"submitted batch job {job}")
    return 0
