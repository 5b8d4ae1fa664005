"""One run over several machines: which processes write the run directory, which
checkpoint a resume continues from, and making every rank hold the same state after it.

Each machine may have a run directory of its own (``sslterm run`` on each, no shared
filesystem) or all may share one (Slurm: one run directory on a shared filesystem). A
token that rank 0 writes into its run directory tells them apart: a machine whose run
directory does not hold it keeps its own copy of every checkpoint and its own event log,
written by its local main process, so ``sslterm resume`` works there too. Rank 0 alone
decides where a resume continues; a rank without that checkpoint receives its state
from rank 0, and every rank checks the agreed position before training.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from sslterm.errors import TrainingError
from sslterm.files import atomic_write_text
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.store import RunDir

TOKEN_FILE = ".rank0-token"


def shares_rank0_dir(acc: Accelerator, run: RunDir, machines: int,
                     patience: float = 5.0) -> bool:
    """Whether this process's run directory is rank 0's own (one machine, or a shared
    filesystem with one run directory): rank 0 writes a fresh token there, and every
    rank looks for it in its own. A directory of another run id cannot be rank 0's; one
    of the same id is given ``patience`` seconds to show the token (a network
    filesystem may cache a directory's listing), so two run directories that happen to
    share a name are told apart too."""
    if machines <= 1 or acc.num_processes == 1:
        return True
    token = uuid.uuid4().hex
    if acc.is_main_process:
        atomic_write_text(run.path / TOKEN_FILE, token)
    sent = [(token, run.read_status().get("run_id"))]
    broadcast_object_list(sent)  # after the write: every rank may look now
    token, run_id = sent[0]
    if acc.is_main_process:
        return True
    if run.read_status().get("run_id") != run_id:
        return False
    deadline = time.monotonic() + patience
    while True:
        try:
            if (run.path / TOKEN_FILE).read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def rank0_checkpoint(acc: Accelerator, ckpt_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """The newest complete checkpoint in rank 0's run directory, (name, state), on every
    rank: the one a resume continues from, whatever the other machines hold."""
    found = ckpt.newest_checkpoint(ckpt_dir) if acc.is_main_process else None
    decided = [(found[0].name, found[1]) if found else None]
    if acc.num_processes > 1:
        broadcast_object_list(decided)
    return decided[0]


def local_copy(ckpt_dir: Path, name: str, state: dict[str, Any]) -> Path | None:
    """This process's own complete copy of rank 0's checkpoint ``name``, if it has one."""
    for path, mine in ckpt.complete_checkpoints(ckpt_dir):
        if path.name == name and mine.get("global_step") == state.get("global_step"):
            return path
    return None


def _on_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers into every rank's ``module``, in place: DDP
    broadcasts them only when it wraps the model, before a checkpoint is loaded."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dense = tensor.data if tensor.data.is_contiguous() else tensor.data.contiguous()
            dist.broadcast(dense, src=0)
            if dense is not tensor.data:
                tensor.data.copy_(dense)


def share_loaded_state(acc: Accelerator, module: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, loaded: bool) -> list[int]:
    """After each rank loaded what it has (``loaded``: this rank had rank 0's checkpoint):
    rank 0's optimizer and loss-scaler state to every rank that had none, then rank 0's
    weights to all. Returns the ranks that received the state."""
    if acc.num_processes == 1:
        return []
    lacking = [r for r, had in enumerate(gather_object([loaded])) if not had]
    if lacking:
        scaler = acc.scaler
        state = [_on_cpu({"optimizer": optimizer.state_dict(),
                          "scaler": scaler.state_dict() if scaler is not None else None})
                 if acc.is_main_process else None]
        broadcast_object_list(state)
        if not loaded:
            optimizer.load_state_dict(state[0]["optimizer"])
            if scaler is not None and state[0]["scaler"]:
                scaler.load_state_dict(state[0]["scaler"])
    broadcast_module(module)
    return lacking


@dataclass(frozen=True)
class Where:
    epoch: int
    step_in_epoch: int
    global_step: int
    steps_per_epoch: int

    def words(self) -> str:
        return (f"epoch {self.epoch} step {self.global_step} "
                f"({self.step_in_epoch} into the epoch, {self.steps_per_epoch} steps/epoch)")


def check_same_position(acc: Accelerator, where: Where) -> None:
    """Every rank must start training at the same (epoch, step): a rank that would
    otherwise pair its collectives with another step's ends the run here, in one line."""
    if acc.num_processes == 1:
        return
    mine = torch.tensor([where.epoch, where.step_in_epoch, where.global_step,
                         where.steps_per_epoch], device=acc.device)
    rows = acc.gather(mine).view(acc.num_processes, 4).tolist()
    others = [(rank, Where(*row)) for rank, row in enumerate(rows) if Where(*row) != Where(*rows[0])]
    if others:
        rank, other = others[0]
        raise TrainingError(
            f"ranks disagree on where to resume: rank 0 at {Where(*rows[0]).words()}, rank "
            f"{rank} at {other.words()}; resume every machine's run with the same profile"
        )
