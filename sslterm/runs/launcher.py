"""Start, stop, kill, resume and delete runs. Never imports torch.

A run is started as ``python -m sslterm.runs.supervise RUN_DIR -- accelerate
launch ... -m sslterm.train RUN_DIR`` in a new session, stdin from /dev/null,
output to ``stdout.log``: it outlives the TUI and the SSH connection that
started it. Arguments go to ``subprocess`` as a list; no value from a profile
ever reaches a shell.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sslterm.errors import ProfileError, UserError
from sslterm.files import atomic_write_text
from sslterm.profile.load import CLI, load_profile, locate, parse_override, resolved_toml
from sslterm.profile.schema import FieldProblem, Profile
from sslterm.runs import scheduler
from sslterm.runs.meta import RunMeta, write_meta
from sslterm.runs.store import (
    ACTIVE,
    RunDir,
    check_output_dir,
    find_run,
    hold_lock,
    new_run_dir,
    output_dir_problem,
    utc_now,
)

if TYPE_CHECKING:
    from sslterm.data.registry import DataShape

NEVER_SUBMITTED = "its Slurm batch script was never submitted"


def _cuda_visible() -> bool:
    """Whether a GPU can be used, decided without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(profile: Profile, run_dir: Path) -> list[str]:
    """The ``accelerate launch`` argument list for this machine of the run."""
    la, world = profile.launch, profile.launch.num_processes * profile.launch.num_machines
    cpu = la.cpu or not _cuda_visible()
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if la.accelerate_config:
        cmd += ["--config_file", la.accelerate_config]
    cmd += [
        "--num_processes", str(world),
        "--num_machines", str(la.num_machines),
        "--mixed_precision", profile.train.precision,
        "--dynamo_backend", "no",
    ]
    if world > 1:
        cmd.append("--multi_gpu")
        port = la.main_process_port if la.num_machines > 1 else free_port()
        cmd += ["--main_process_port", str(port)]
    if la.num_machines > 1:
        cmd += ["--machine_rank", str(la.machine_rank), "--main_process_ip", la.main_process_ip,
                "--same_network"]
    if cpu and world == 1:
        cmd.append("--cpu")  # (several CPU processes: --multi_gpu falls back to gloo)
    elif not cpu and la.gpu_ids != "all":
        cmd += ["--gpu_ids", la.gpu_ids]
    cmd += ["-m", "sslterm.train", str(run_dir)]
    return cmd


def check_profile_environment(
    profile: Profile, path: str | Path | None = None, overrides: Sequence[str] = ()
) -> None:
    """Checks that need the disk, the data or timm (slow imports); run before a run dir exists,
    so that what can be known before launch never fails in the trainer.

    Given the profile's ``path``, their errors become ``ProfileError``s located like
    schema errors: file, line and key (``<command line>`` when an override set the key).
    """
    from sslterm.data.registry import check_data
    from sslterm.models.encoder import check_encoder_name
    from sslterm.runs.warmstart import check_init_from

    def check_output() -> None:
        problem = output_dir_problem(profile.launch.output_dir)
        if problem:
            raise UserError(f"launch.output_dir: {profile.launch.output_dir}: {problem}")

    def check_init() -> None:
        if profile.model.init_from:
            check_init_from(init_source(profile).model.init_from, profile.model.encoder)

    shape = []
    for default_key, check in (("launch.output_dir", check_output),
                               ("data.root", lambda: shape.append(check_data(profile.data))),
                               ("model.encoder", lambda: check_encoder_name(profile.model.encoder)),
                               ("model.init_from", check_init),
                               ("train.batch_size", lambda: check_data_shape(profile, shape[0]))):
        try:
            check()
        except ProfileError:
            raise
        except UserError as exc:
            raise _at_key(exc, default_key, path, overrides) from None
        except FieldProblem as exc:
            raise _at_key(UserError(f"{exc.key}: {exc}"), exc.key, path, overrides) from None


def check_data_shape(profile: Profile, shape: DataShape) -> None:
    """What the data decides about the profile: a batch larger than the training images
    (the trainer would fail at its first epoch) and DINO local crops larger than images
    whose size only the files tell (image folders with ``data.image_size = 0``)."""
    from sslterm.data.registry import held_out

    problem = profile.local_size_problem(shape.image_size)
    if problem is not None:
        raise problem
    batch, fraction = profile.train.batch_size, profile.data.val_fraction
    bound = batch
    while bound - held_out(bound, fraction) < batch:  # enough images to stop counting at
        bound += max(1, bound // 8)
    n = shape.count_train(bound)
    n_val = held_out(n, fraction)
    if n - n_val < batch:
        kept = f"{n} images, {n_val} held out by data.val_fraction = {fraction:g}" if n_val else (
            f"{n} images")
        raise FieldProblem(
            "train.batch_size",
            f"{batch} is larger than the {n - n_val} training images of {profile.data.dataset} "
            f"({kept}); lower it to at most {n - n_val}",
        )


_SECTIONS = "|".join(Profile.model_fields)
_KEY_PREFIX = re.compile(rf"((?:{_SECTIONS})\.[a-z_]+): (.*)", re.DOTALL)
_KEY_MENTION = re.compile(rf"(?<!set )\b(?:{_SECTIONS})\.[a-z_]+\b")  # "or set K" only suggests K


def _at_key(
    exc: UserError, default_key: str, path: str | Path | None, overrides: Sequence[str]
) -> UserError:
    """``exc`` located at its key: the one its message starts with, else the first one it
    names (the setting to change), else ``default_key``."""
    if path is None:
        return exc
    message = str(exc)
    prefixed = _KEY_PREFIX.fullmatch(message)
    if prefixed:
        key, message = prefixed.groups()
    else:
        mention = _KEY_MENTION.search(message)
        key = mention.group(0) if mention else default_key
    if key in {parse_override(o)[0] for o in overrides}:
        return ProfileError(CLI, None, key, message)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    return ProfileError(str(path), locate(text, key), key, message)


def _spawn(run: RunDir, profile: Profile) -> None:
    """Start the supervisor, handing it the run's lock: taken here, before the status is
    written, so of two launches at once exactly one goes ahead and the other is refused."""
    lock_fd = hold_lock(run)
    try:
        run.update_status(state="queued", error=None, exit_code=None, ended=None)
        cmd = [sys.executable, "-m", "sslterm.runs.supervise", str(run.path), "--",
               *accelerate_command(profile, run.path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", SSLTERM_LOCK_FD=str(lock_fd))
        if profile.launch.cpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        if profile.launch.cpu or not _cuda_visible():
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(
                1, profile.launch.num_processes))))
        with open(run.stdout, "ab") as log:
            child = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=os.getcwd(), pass_fds=(lock_fd,),
            )
    finally:
        os.close(lock_fd)  # the supervisor's inherited copy keeps the lock
    # Reap the supervisor when it ends, so a long-lived caller (the app) keeps no zombies.
    threading.Thread(target=child.wait, daemon=True).start()


def init_source(profile: Profile) -> Profile:
    """``profile`` with a ``model.init_from`` run id (not a file or folder here) turned into
    that run's directory under ``launch.output_dir``, which the frozen profile then holds
    absolute: a run id means nothing from another directory."""
    ref = profile.model.init_from
    if not ref or Path(ref).expanduser().exists():
        return profile
    try:
        source = find_run(ref, profile.launch.output_dir)
    except UserError as exc:
        raise UserError(f"model.init_from: {ref}: no such file or folder, and {exc}") from None
    model = profile.model.model_copy(update={"init_from": str(source.path.resolve())})
    return profile.model_copy(update={"model": model})


def create_run(
    profile: Profile, output_dir: str | None = None, meta: RunMeta | None = None
) -> RunDir:
    profile = init_source(profile)
    run = new_run_dir(output_dir or profile.launch.output_dir, profile.name)
    atomic_write_text(run.profile, resolved_toml(profile))
    if meta:
        write_meta(run, meta)
    run.update_status(state="queued", run_id=run.id, profile=profile.name, created=utc_now(),
                      host=socket.gethostname())
    return run


def start_run(
    profile_path: str | Path,
    overrides: Sequence[str] = (),
    *,
    output_dir: str | None = None,
    check: bool = True,
    meta: RunMeta | None = None,
) -> RunDir:
    """Validate, create the run directory and start the run; returns at once. ``meta``:
    its label, tags and note (written before it starts, so every view has them at once)."""
    profile = load_profile(profile_path, overrides)
    if output_dir:
        check_output_dir(output_dir)
        profile.launch.output_dir = output_dir
    if check:
        check_profile_environment(profile, profile_path, overrides)
    run = create_run(profile, meta=meta)
    _spawn(run, profile)
    return run


def wait_started(run: RunDir, timeout: float = 30.0) -> None:
    """Wait until the supervisor has marked the run running (or it ended: the lock,
    taken before the supervisor starts, is free again)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run.read_status().get("state") not in ("queued", None) or not run.is_locked():
            return
        time.sleep(0.05)


def _remote(status: dict) -> str | None:
    """The host a started run lives on, when that is not this one."""
    host = status.get("host")
    return host if host and host != socket.gethostname() else None


def _pending_job(status: dict, state: str) -> str | None:
    """The Slurm job id of a run that Slurm holds but has not started."""
    job = status.get("slurm_job_id")
    return str(job) if job and state == "queued" else None


def request_stop(run: RunDir) -> None:
    """Ask the trainer to checkpoint and exit (the STOP file, read on every host that
    shares the run directory); a Slurm job that has not started is cancelled."""
    status = run.read_status()
    state, _ = scheduler.run_state(run)
    job = _pending_job(status, state)
    if job:
        scheduler.cancel(job, kill=False)
        run.update_status(state="stopped", error=f"Slurm job {job} cancelled before it started",
                          ended=utc_now())  # fmt: skip
        return
    if scheduler.unsubmitted(run):
        run.update_status(state="stopped", error=NEVER_SUBMITTED, ended=utc_now(),
                          when=("queued",))  # fmt: skip
        return
    if state not in ACTIVE:
        raise UserError(f"run {run.id} is not running ({state})")
    # status first: once STOP exists the run may end and write its final state at
    # once, which a later "stopping" would overwrite
    if run.update_status(state="stopping", when=ACTIVE) is None:
        raise UserError(f"run {run.id} has just ended ({scheduler.run_state(run)[0]})")
    run.stop_file.touch()


def kill_run(run: RunDir, sig: int = signal.SIGKILL) -> None:
    """Signal the run's whole process group (supervisor, accelerate, every rank); a
    Slurm job seen from another host is cancelled through Slurm instead."""
    status = run.read_status()
    state, _ = scheduler.run_state(run)
    job = status.get("slurm_job_id")
    remote = _remote(status)
    via_slurm = bool(job and (remote or _pending_job(status, state)))
    never_started = scheduler.unsubmitted(run)  # nothing runs: only the status changes
    if via_slurm and state in (*ACTIVE, "queued"):
        scheduler.cancel(str(job), kill=state in ACTIVE)
    elif not never_started and (state not in ACTIVE or not status.get("pgid")):
        raise UserError(f"run {run.id} is not running ({state})")
    elif remote and not never_started:
        raise UserError(f"run {run.id} runs on {remote}: kill it there (this host cannot "
                        "signal its processes)")  # fmt: skip
    if sig == signal.SIGKILL:
        run.update_status(state="failed", error="killed by the user", ended=utc_now(),
                          when=(*ACTIVE, "queued"))  # fmt: skip
    if not (via_slurm or never_started):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(status["pgid"], sig)


def resume_run(run: RunDir, overrides: Sequence[str] = ()) -> RunDir:
    """Start the same run directory again; the trainer continues from its newest
    complete checkpoint (or from the start if it has none). A Slurm run is submitted
    again (its batch script), not started on this host."""
    if run.is_locked():
        raise UserError(f"run {run.id} is already running (pid {run.read_status().get('pid')})")
    status = run.read_status()
    state, _ = scheduler.run_state(run)
    if state == "finished":
        raise UserError(f"run {run.id} has finished; start a new run to train further")
    if state in ACTIVE or _pending_job(status, state):
        where = _remote(status) or f"Slurm job {status.get('slurm_job_id')}"
        raise UserError(f"run {run.id} is already {state} ({where})")
    profile = init_source(load_profile(run.profile, overrides))
    script = run.path / scheduler.SCRIPT_NAME
    if script.is_file() and overrides:
        raise UserError(f"run {run.id} is a Slurm job: its shape is in {script}; "
                        "resume it without overrides")  # fmt: skip
    if overrides:
        atomic_write_text(run.profile, resolved_toml(profile))
    if script.is_file():
        job = scheduler.submit(script)
        run.update_status(state="queued", slurm_job_id=job, host=socket.gethostname(),
                          pid=None, pgid=None, error=None, ended=None)  # fmt: skip
        return run
    _spawn(run, profile)
    return run


def delete_run(run: RunDir) -> None:
    """Delete a run directory, never one that a process or a Slurm job may still write
    into: the one rule for the app's delete and ``sslterm rm``."""
    state, _ = scheduler.run_state(run)
    if state in ACTIVE or run.is_locked():
        raise UserError(f"run {run.id} is {state}; stop it before deleting")
    job = _pending_job(run.read_status(), state)
    if job:
        raise UserError(f"run {run.id} waits in Slurm as job {job}; stop it before deleting")
    shutil.rmtree(run.path)
