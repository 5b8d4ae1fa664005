"""The training engine: one Accelerate process of a run, driven by the frozen profile.

Every process runs this; only the global main process writes events, status
and checkpoint metadata. Control (stop requests, SIGTERM) is decided on all
ranks together at log intervals, so the hot loop has no host-device sync
except the one loss read every ``train.log_every`` steps.

The engine knows no method: it drives whichever ``model.method`` names through the
interface of :mod:`sslterm.methods.base` (views, the one forward, validation metrics,
``after_step``, ``eval_encoder``) and owns what they all share: data path, optimizer,
schedule, precision, checkpoints, online probe, evaluation and results.

Fault injection for the tests: ``SSLTERM_FAULT_*`` environment variables, inert
unless set (docs/events.md lists them); ``Trainer.faults`` holds them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import shutil
import signal
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import SCALER_NAME, InitProcessGroupKwargs, set_seed

from sslterm.data.registry import Splits, build_splits
from sslterm.data.sampler import ShardedBatches
from sslterm.data.views import describe_views
from sslterm.errors import StopRun, TrainingError, UserError
from sslterm.files import atomic_write_text
from sslterm.methods.base import Method
from sslterm.models.norm import convert_sync_batchnorm
from sslterm.profile.load import load_profile
from sslterm.profile.schema import Profile, move_legacy_keys
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.events import EventWriter, append_resumed
from sslterm.runs.store import RunDir
from sslterm.runs.summary import plural, stopped_words
from sslterm.train import trackers
from sslterm.train.batches import Batches
from sslterm.train.evaluation import (
    COLLECTIVE_TIMEOUT,
    Evaluator,
    eval_cost,
    eval_rows,
    shard,
    sync_batchnorm,
)
from sslterm.train.machines import (
    Where,
    check_same_position,
    local_copy,
    rank0_checkpoint,
    share_loaded_state,
    shares_rank0_dir,
)
from sslterm.train.model import build_model, shape_settings
from sslterm.train.optim import build_optimizer, clip_gradients, lr_at, param_groups, scaled_lr
from sslterm.train.ranks import PeerWatch, die_with_launcher, root_cause, write_rank_error
from sslterm.train.results import History, build_results, load_history
from sslterm.train.schedule import checkpoint_due, probe_due, val_due


@dataclass
class Position:
    epoch: int = 0  # epoch in progress
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    global_step: int = 0


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse bf16 on a GPU without native bf16 (V100, T4) before anything starts: PyTorch
    would emulate it or fail deep inside cuDNN or Triton instead of saying so."""
    if precision != "bf16" or device.type != "cuda":
        return
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(
            f"train.precision: {torch.cuda.get_device_name(device)} (compute capability "
            f"{major}.{minor}) has no native bf16; use train.precision=fp16"
        )


def match_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give each optimizer state tensor its parameter's memory format: state loaded from a
    checkpoint taken with the other ``train.channels_last`` keeps the old strides, which
    fused CUDA optimizers refuse (and fused CPU ones misapply)."""
    for group in opt.param_groups:
        for param in group["params"]:
            state = opt.state.get(param, {})
            for key, value in state.items():
                if (torch.is_tensor(value) and value.shape == param.shape
                        and value.stride() != param.stride()):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def current_names(settings: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's recorded settings under today's key names: those taken before each
    method had its own profile section recorded its keys as ``model.*``; the profile's own
    legacy move (:func:`move_legacy_keys`) renames them."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        section, dot, name = key.partition(".")
        if dot:
            nested.setdefault(section, {})[name] = value
        else:
            flat[key] = value
    for section, values in move_legacy_keys(nested).items():
        flat.update({f"{section}.{name}": value for name, value in values.items()})
    return flat


def device_names(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [torch.cuda.get_device_name(device)]
    return [f"cpu ({os.cpu_count()} cores)"]


class Trainer:
    def __init__(self, run: RunDir, profile: Profile) -> None:
        self.run, self.p = run, profile
        t = profile.train
        self.acc = Accelerator(
            mixed_precision=t.precision,
            gradient_accumulation_steps=t.accumulate,
            # Without a GPU, cpu=True is what makes a multi-process launch a gloo group.
            cpu=profile.launch.cpu or not torch.cuda.is_available(),
            # training collectives: short; the long waits have a group of their own
            kwargs_handlers=[InitProcessGroupKwargs(
                timeout=timedelta(minutes=profile.launch.collective_timeout))],
            log_with=trackers.create(profile, run) or None,
        )
        self.main = self.acc.is_main_process
        # writes checkpoints and events into this process's run directory: rank 0, and the
        # local main process of a machine whose run directory is its own (set in setup)
        self.writer = self.main
        expected = int(os.environ.get("WORLD_SIZE", "1"))
        if self.acc.num_processes != expected:
            raise TrainingError(
                f"launched {expected} processes but Accelerate formed a group of "
                f"{self.acc.num_processes}; check the accelerate config / launch settings"
            )
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        # waits for one rank's evaluation or checkpoint write, on gloo whatever the backend
        self.wait_group = (dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
                           if self.world > 1 else None)
        self.peers = (PeerWatch(self.rank, self.world)
                      if self.world > 1 and "MASTER_ADDR" in os.environ else None)
        self.events: EventWriter | None = None  # opened after a resume has rewritten the log
        self.stop_requested = False
        self.last_checkpoint, self.last_checkpoint_step = "", -1  # saved by this process
        self.history = History()
        self.faults = {k.removeprefix("SSLTERM_FAULT_"): v for k, v in os.environ.items()
                       if k.startswith("SSLTERM_FAULT_")}
        signal.signal(signal.SIGTERM, self._on_sigterm)

    # -- plumbing ----------------------------------------------------------------
    def _on_sigterm(self, *_: Any) -> None:
        self.stop_requested = True

    def wait_long(self) -> None:
        """A barrier that waits up to ``COLLECTIVE_TIMEOUT`` (one rank evaluates, writes a
        checkpoint or builds a cache while the others wait), not the training timeout."""
        if self.wait_group is not None:
            dist.barrier(group=self.wait_group)

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """``Accelerator.main_process_first`` with the long wait."""
        if not self.main:
            self.wait_long()
        yield
        if self.main:
            self.wait_long()

    def open_events(self) -> None:
        if self.writer and self.events is None:
            self.events = trackers.TrackedEvents(self.run.path, self.acc)

    def emit(self, kind: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.emit(kind, **fields)

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)
        if self.main:
            print(f"[sslterm] {message}", flush=True)

    # -- setup ---------------------------------------------------------------------
    def setup(self) -> None:
        p, t = self.p, self.p.train
        check_precision(t.precision, self.acc.device)
        set_seed(t.seed)
        shared = shares_rank0_dir(self.acc, self.run, p.launch.num_machines)
        self.writer = self.main or (self.acc.is_local_main_process and not shared)
        # accelerate's save_state writes weights and optimizer on the main process, or on
        # each node's local main with save_on_each_node: this process's own copy
        self.acc.project_configuration.save_on_each_node = self.writer and not self.main
        if self.writer:
            ckpt.remove_partial(self.run.checkpoints)
        self.resume_from = rank0_checkpoint(self.acc, self.run.checkpoints)
        self.splits: Splits = build_splits(p.data, t.seed)
        info = self.splits.info
        self.size = p.data.image_size or info.image_size
        # starting weights (model.pretrained, model.init_from) only where no checkpoint replaces them
        fresh = self.resume_from is None
        built = build_model(p, self.size, info.num_classes, pretrained_weights=fresh)
        self.init_weights = built.init_weights
        model, self.feature_dim, self.small_stem = built.model, built.feature_dim, built.small_stem
        views = model.views()
        self.device = self.acc.device
        if self.device.type == "cuda":  # as timm's train.py: training shapes are fixed (drop_last)
            torch.backends.cudnn.benchmark = True
            # the encoder's precision; regions that claim float32 turn TF32 off (eval/precision)
            torch.backends.cuda.matmul.allow_tf32 = t.tf32
            torch.backends.cudnn.allow_tf32 = t.tf32
        if p.model.sync_batchnorm and self.world > 1:
            model = convert_sync_batchnorm(model, self.device)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=self.memory_format)

        self.per_rank = t.batch_size // self.world
        n_train = len(self.splits.train)
        if n_train < t.batch_size:
            raise UserError(
                f"train.batch_size {t.batch_size} is larger than the {n_train} training images"
            )
        sampler = ShardedBatches(n_train, self.per_rank, self.rank, self.world, t.seed)
        micro = len(sampler) - len(sampler) % t.accumulate
        self.steps_per_epoch = micro // t.accumulate
        if t.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.warmup_steps = round(t.warmup_epochs * self.steps_per_epoch)
        self.peak_lr = scaled_lr(t.base_lr, t.batch_size * t.accumulate, t.lr_scaling)

        opt = build_optimizer(
            t.optimizer,
            param_groups(model, t.weight_decay, model.online_probe, model.fixed_lr_parameters()),
            self.peak_lr,
            momentum=t.momentum, weight_decay=t.weight_decay,
            trust_coefficient=t.lars_trust_coefficient, clip_lr=t.lars_clip_lr, betas=t.betas,
            fused=self.device.type == "cuda",
        )
        self.wait_long()  # ranks that built their data and model at different speeds
        self.model, self.opt = self.acc.prepare(model, opt)
        self.forward = compiled(self.model) if t.compile else self.model
        # the method outside the DDP wrapper, for every call other than the forward
        self.method: Method = self.acc.unwrap_model(self.model)
        self.batches = Batches(p, self.splits, self.size, views, sampler, self.device, self.rank,
                               self.main_first)
        self.evaluator = Evaluator(
            self.acc, p, self.splits, self.size, use_tensors=self.batches.batched,
            channels_last=t.channels_last, encoder=lambda: self.method.eval_encoder(),
        )

    def epoch_batches(self, epoch: int, skip: int) -> Iterator[tuple[list[torch.Tensor],
                                                                     torch.Tensor]]:
        """The epoch's micro-batches after ``skip`` optimizer steps: (views, labels)."""
        t = self.p.train
        return self.batches.epoch(epoch, skip * t.accumulate, self.steps_per_epoch * t.accumulate)

    def val_views(self, idx: torch.Tensor, batch_size: int) -> Iterator[list[torch.Tensor]]:
        return self.batches.val_views(idx, batch_size)

    # -- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, pos: Position, complete_epoch: bool) -> str:
        start = time.time()
        name = ckpt.checkpoint_name(pos.global_step)
        tmp = self.run.checkpoints / f"{ckpt.TMP_PREFIX}{name}"
        if self.writer:
            self.run.checkpoints.mkdir(exist_ok=True)
        self.wait_long()
        try:
            self.acc.save_state(str(tmp), safe_serialization=True)
            if self.main and self.faults.get("ENOSPC_AT_STEP") == str(pos.global_step):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "optimizer.bin"))
            self.wait_long()
            if self.writer:
                time.sleep(float(self.faults.get("SLEEP_BEFORE_COMMIT", 0)))
                state = {
                    "epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch,
                    "global_step": pos.global_step, "world_size": self.world,
                    "complete_epoch": complete_epoch, "time": time.time(),
                    "settings": self.checkpoint_settings(),
                }
                ckpt.commit(tmp, self.run.checkpoints / name, state)
        except Exception as exc:
            raise self._write_failed(tmp, name, exc) from exc
        if self.writer:
            time.sleep(float(self.faults.get("SLEEP_AFTER_COMMIT", 0)))
            ckpt.prune(self.run.checkpoints, self.p.train.keep_checkpoints)
            self.emit("checkpoint", epoch=pos.epoch, step=pos.global_step,
                      path=f"checkpoints/{name}", complete_epoch=complete_epoch,
                      seconds=round(time.time() - start, 3))
        self.wait_long()
        self.last_checkpoint, self.last_checkpoint_step = f"checkpoints/{name}", pos.global_step
        return self.last_checkpoint

    def _write_failed(self, tmp: Path, name: str, exc: Exception) -> TrainingError:
        """A torn checkpoint write (a full disk, say): remove it, which frees room for the
        error record and the final status, and say how much space there was."""
        free = shutil.disk_usage(self.run.checkpoints).free / 2**20
        shutil.rmtree(tmp, ignore_errors=True)
        first = (str(exc).splitlines() or [""])[0]
        return TrainingError(f"checkpoint {name} not written ({free:.1f} MiB free space left): "
                             f"{first or type(exc).__name__}; the previous checkpoint is kept")

    def maybe_resume(self) -> tuple[Position, bool]:
        """Continue from rank 0's newest complete checkpoint (decided in :meth:`setup`):
        each rank loads its own copy where it has one, a rank without receives rank 0's
        state, and every rank's weights are rank 0's before the position is checked."""
        decided = self.resume_from
        if decided is None:
            if self.writer:
                append_resumed(self.run.path, 0, 0, None)
            check_same_position(self.acc, Where(0, 0, 0, self.steps_per_epoch))
            return Position(), False
        name, state = decided
        if state.get("world_size") != self.world:
            raise TrainingError(
                f"checkpoint {name} was taken with {state.get('world_size')} processes; "
                f"resume with {state.get('world_size')} (launch.num_processes x num_machines), "
                f"not {self.world}"
            )
        conflict = ckpt.settings_conflict(name, current_names(state.get("settings", {})),
                                          self.checkpoint_settings())
        if conflict:
            raise UserError(conflict)
        self.acc.wait_for_everyone()
        path = local_copy(self.run.checkpoints, name, state)
        try:
            if path is not None:
                self.load_state(path)
        except pickle.UnpicklingError as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise TrainingError(
                f"checkpoint {name} holds more than tensors and was refused by the "
                f"safe loader (weights_only): {first}"
            ) from exc
        received = share_loaded_state(self.acc, self.method, self.opt, path is not None)
        if received:
            self.log(f"rank(s) {', '.join(map(str, received))} had no copy of checkpoint "
                     f"{name} in their run directory: they received its state from rank 0")
        if self.writer:
            append_resumed(self.run.path, state["epoch"], state["global_step"],
                           f"checkpoints/{name}")
        pos = Position(state["epoch"], state["step_in_epoch"], state["global_step"])
        if pos.step_in_epoch >= self.steps_per_epoch:
            pos = Position(pos.epoch + 1, 0, pos.global_step)
        check_same_position(self.acc, Where(pos.epoch, pos.step_in_epoch, pos.global_step,
                                            self.steps_per_epoch))
        self.history = load_history(self.run.path)
        return pos, True

    def checkpoint_settings(self) -> dict[str, Any]:
        """What a checkpoint's tensors depend on (:func:`shape_settings`). Layout, compile
        and precision convert (:meth:`load_state`)."""
        return shape_settings(self.p, self.small_stem, self.splits.info.num_classes)

    def load_state(self, path: Path) -> None:
        """``Accelerator.load_state``, adapted to settings changed since the checkpoint: fp16
        after bf16 or fp32 starts a fresh loss scaler (there is none saved to load), and the
        optimizer state takes the parameters' current ``train.channels_last`` layout."""
        scaler = self.acc.scaler
        if scaler is not None and not (path / SCALER_NAME).exists():
            self.log(f"checkpoint {path.name} was taken without fp16: the loss scaler starts fresh")
            self.acc.scaler = None
        try:
            self.acc.load_state(str(path))
        finally:
            self.acc.scaler = scaler
        match_param_layout(self.opt)

    def record_views(self, epoch: int, micro: int, views: list[torch.Tensor]) -> None:
        """Test hook: a digest of every view this rank trains on, one line per micro-batch
        in ``views-rank<R>.jsonl``, so tests can compare the augmentation streams of ranks
        and of resumed runs."""
        digests = [[hashlib.sha1(v[i].float().cpu().numpy().tobytes()).hexdigest()[:16]
                    for v in views] for i in range(len(views[0]))]
        line = json.dumps({"epoch": epoch, "micro": micro, "views": digests})
        with open(self.run.path / f"views-rank{self.rank}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def fault_after_step(self, step: int) -> None:
        """Test hooks after an optimizer step (module docstring); only when one is set."""
        f = self.faults
        if f.get("RAISE_AT_STEP") == str(step) and f.get("RAISE_ON_RANK", "0") == str(self.rank):
            raise RuntimeError(f"injected fault on rank {self.rank} at step {step}")
        time.sleep(float(f.get("STEP_SLEEP", 0)))

    # -- control ---------------------------------------------------------------------
    def agree_to_stop(self) -> bool:
        if self.writer and self.run.stop_file.exists():
            self.stop_requested = True
        if self.stop_requested:
            self.acc.set_trigger()
        return self.acc.check_trigger()

    # -- the loop --------------------------------------------------------------------
    def fit(self) -> None:
        p, t = self.p, self.p.train
        self.setup()
        pos, resumed = self.maybe_resume()
        self.open_events()
        trackers.start(self.acc, p)
        self.emit(
            "run_started", run_id=self.run.id, profile=p.name, dataset=p.data.dataset,
            method=p.model.method,
            encoder=p.model.encoder, world_size=self.world, num_machines=p.launch.num_machines,
            devices=device_names(self.device), epochs=t.epochs,
            steps_per_epoch=self.steps_per_epoch, global_batch=t.batch_size,
            peak_lr=self.peak_lr, precision=t.precision,
            augment=self.batches.path, augment_reason=self.batches.reason,
            small_stem=self.small_stem, start_epoch=pos.epoch, start_step=pos.global_step,
            resumed=resumed, host=socket.gethostname(), pid=os.getpid(),
            init_from=p.model.init_from, init_weights=self.init_weights,
            launched=self.run.read_status().get("started"),  # before imports, data, model
        )
        sp = self.splits
        held_out = (f"{len(sp.test)} test images (validation and kNN on the test split: "
                    "data.val_fraction = 0)" if sp.val_is_test
                    else f"{len(sp.val)} val / {len(sp.test)} test images")
        self.log(
            f"{p.model.method} with {p.model.encoder} on {p.data.dataset}: "
            f"{len(sp.train)} train / {held_out}, "
            f"{plural(self.world, 'process', 'processes')}, {self.steps_per_epoch} steps/epoch"
        )
        if self.init_weights:  # a warm start; a resume loads its own checkpoint instead
            self.log(f"warm start (model.init_from): encoder weights from {self.init_weights}")
        self.log(f"views: {describe_views(self.batches.views, p.augment)}")
        self.log(f"data path: {self.batches.path} ({self.batches.reason})")
        self.log(eval_cost(p.probe, len(self.splits.train), len(self.splits.val),
                           self.feature_dim, self.world))
        try:
            if self.agree_to_stop():  # asked while starting (data, model): before any step
                raise StopRun
            for epoch in range(pos.epoch, t.epochs):
                self.train_epoch(epoch, pos)
                self.after_epoch(epoch, pos)
                pos.epoch, pos.step_in_epoch = epoch + 1, 0
        except StopRun:
            if self.last_checkpoint_step == pos.global_step:
                path = self.last_checkpoint
            else:
                self.sync_batchnorm()
                path = self.save_checkpoint(pos, complete_epoch=False)
            mid_epoch = pos.step_in_epoch > 0
            words = stopped_words(pos.epoch, t.epochs, pos.global_step, mid_epoch)
            self.log(f"{words}; resume continues here")
            self.emit("run_stopped", epoch=pos.epoch, step=pos.global_step, checkpoint=path,
                      epochs=t.epochs, mid_epoch=mid_epoch)
            return
        results = self.finish()
        self.emit("run_finished", epoch=t.epochs - 1, step=pos.global_step, results=results)

    def train_epoch(self, epoch: int, pos: Position) -> None:
        t = self.p.train
        self.model.train()
        start, images = time.time(), 0
        tick, tick_images = time.time(), 0
        loss_sum = torch.zeros((), device=self.device)
        probe_correct = torch.zeros((), device=self.device, dtype=torch.long)
        micro_done = 0
        scalars: dict[str, float] = {}
        micro = pos.step_in_epoch * t.accumulate
        for views, y in self.epoch_batches(epoch, pos.step_in_epoch):
            if self.faults.get("VIEW_DIGESTS"):
                self.record_views(epoch, micro, views)
            micro += 1
            views = [v.contiguous(memory_format=self.memory_format) for v in views]
            with self.acc.accumulate(self.model):
                self.method.set_progress(pos.global_step, self.steps_per_epoch, self.total_steps)
                with self.acc.autocast():
                    out = self.forward(views, y if t.online_probe else None)
                self.acc.backward(out["loss"])
                if self.acc.sync_gradients:
                    lr = lr_at(pos.global_step, self.total_steps, self.warmup_steps,
                               self.peak_lr, t.min_lr_ratio)
                    for group in self.opt.param_groups:
                        group["lr"] = self.peak_lr if group.get("fixed_lr") else lr
                    if t.grad_clip:
                        self.acc.unscale_gradients()
                        clip_gradients(self.model.parameters(), t.grad_clip, t.grad_clip_mode)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
            loss_sum += out["ssl_loss"].detach()
            if "probe_correct" in out:
                probe_correct += out["probe_correct"]
            micro_done += 1
            images += t.batch_size
            tick_images += t.batch_size
            if not self.acc.sync_gradients:
                continue
            scalars = self.method.after_step(pos.global_step, self.total_steps)
            pos.global_step += 1
            pos.step_in_epoch += 1
            if self.faults:
                self.fault_after_step(pos.global_step)
            if pos.global_step % t.log_every == 0 or pos.step_in_epoch == self.steps_per_epoch:
                loss = self.acc.reduce(out["ssl_loss"].detach(), "mean").item()
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss} at epoch {epoch} step {pos.global_step}; "
                        "the last good checkpoint is kept (try a lower train.base_lr)"
                    )
                now = time.time()
                self.emit("step", epoch=epoch, step=pos.global_step, loss=loss, lr=lr,
                          ips=round(tick_images / max(now - tick, 1e-9), 1),
                          **step_scalars(out), **scalars)
                tick, tick_images = now, 0
                # at an epoch's last step, after_epoch decides (after the epoch's record)
                if pos.step_in_epoch < self.steps_per_epoch and self.agree_to_stop():
                    raise StopRun
        seconds = time.time() - start
        mean_loss = self.acc.reduce(loss_sum / max(micro_done, 1), "mean").item()
        if not math.isfinite(mean_loss):
            raise TrainingError(f"loss became {mean_loss} in epoch {epoch}; last good checkpoint kept")
        record = dict(epoch=epoch, step=pos.global_step, loss=mean_loss,
                      lr=self.opt.param_groups[0]["lr"], ips=round(images / max(seconds, 1e-9), 1),
                      seconds=round(seconds, 3))
        if t.online_probe and micro_done:
            correct = self.acc.reduce(probe_correct, "sum").item()
            record["online_top1"] = round(100.0 * correct / (micro_done * t.batch_size), 3)
        self.history.epochs.append(record)
        self.emit("epoch", **record)

    def sync_batchnorm(self) -> None:
        sync_batchnorm(self.model, self.world)

    def after_epoch(self, epoch: int, pos: Position) -> None:
        t, pr = self.p.train, self.p.probe
        self.sync_batchnorm()
        if val_due(epoch, t.epochs, t.val_interval):
            self.validate(epoch, pos)
        if probe_due(epoch, t.epochs, pr.interval, pr.enabled):
            self.linear_probe(epoch, pos)
        if checkpoint_due(epoch, t.epochs, t.checkpoint_interval):
            self.save_checkpoint(Position(epoch + 1, 0, pos.global_step), complete_epoch=True)
        if self.agree_to_stop():
            pos.epoch, pos.step_in_epoch = epoch + 1, 0
            raise StopRun

    @torch.no_grad()
    def val_metrics(self) -> dict[str, float]:
        """The method's ``val_metrics`` on the held-out split (at most ``probe.val_max_images``
        of it), image-weighted means over all ranks, in one reduce of a fixed, sorted key list.
        Scored batch by batch into running sums, so one batch of views is held at a time
        however large the split. A rank whose shard makes no batch of two scores two images
        at weight 0, so it still knows the keys."""
        n = len(self.splits.val)
        if n < 2:
            return {}
        # the kNN queries' seed: a cap no larger than probe.knn_max_queries scores their images
        rows = eval_rows(n, self.p.probe.val_max_images, self.p.train.seed + 1)
        idx = rows[torch.unique_consecutive(shard(len(rows), self.rank, self.world))]  # unpadded
        sums: dict[str, torch.Tensor] = {}

        def score(views: list[torch.Tensor], weight: float) -> None:
            with self.acc.autocast():
                metrics = self.method.val_metrics(views)
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * weight

        images = 0
        for views in self.val_views(idx, min(self.per_rank, len(idx))):
            score(views, float(len(views[0])))
            images += len(views[0])
            del views  # before the next batch is made
        if not images:
            for views in self.val_views(torch.arange(2), 2):
                score(views, 0.0)
        keys = sorted(sums)
        weight = torch.tensor(float(images), device=self.device)
        totals = self.acc.reduce(torch.stack([*(sums[k] for k in keys), weight]), "sum")
        if totals[-1] <= 0:
            return {}
        return {k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)}

    def validate(self, epoch: int, pos: Position) -> None:
        """The method's SSL metrics on the held-out split, and kNN on frozen features."""
        if len(self.splits.val) == 0:
            return
        method = self.method
        was_training = method.training
        method.eval()
        record: dict[str, Any] = {"epoch": epoch, "step": pos.global_step, **self.val_metrics()}
        if self.p.probe.knn:
            acc = self.evaluator.knn()
            if acc is not None:
                record.update(knn_top1=acc["top1"], knn_top5=acc["top5"])
        method.train(was_training)
        self.history.val.append(record)
        self.emit("val", **record)

    def linear_probe(self, epoch: int, pos: Position) -> dict[str, Any] | None:
        """Offline linear evaluation on frozen features (original protocol)."""
        start = time.time()
        metrics = self.evaluator.linear()
        record = None
        if metrics is not None:
            record = {"epoch": epoch, "step": pos.global_step, "protocol": "linear", **metrics,
                      "seconds": round(time.time() - start, 3)}
            self.history.probes.append(record)
            self.emit("probe", **record)
        self.wait_long()
        return record

    def finish(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        if self.main:
            results = build_results(self.p, self.history, self.run)
            atomic_write_text(self.run.results, json.dumps(results, indent=2) + "\n")
        return results

    def shutdown(self) -> None:
        """End the process group together: a rank that exits with it still alive can abort
        in its teardown ("terminate called without an active exception") while a peer's
        connection closes, and the launcher then kills the other rank of a finished run."""
        if self.world > 1:
            self.acc.wait_for_everyone()
        if self.peers is not None:
            self.peers.stop()
        self.acc.end_training()


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """The training forward compiled as PyTorch recommends for DDP: the DDP-wrapped model
    itself, so Dynamo splits its graph at the gradient buckets and communication still
    overlaps the backward (compiling the encoder inside DDP loses that). The whole
    method's forward is in it, teacher included; ``dynamic=False`` gives one graph per set
    of view sizes (training shapes are fixed: drop_last). The wrapper is not what
    Accelerate saves, so checkpoint keys do not change and a resume may toggle it;
    evaluation runs the eager encoder (its batch sizes vary)."""
    return torch.compile(model, dynamic=False)


def step_scalars(out: dict[str, torch.Tensor]) -> dict[str, float]:
    """The method's own 0-d scalars of a training step, for the ``step`` event (this rank's;
    read only at log steps)."""
    skip = {"loss", "ssl_loss", "features", "probe_correct"}
    return {k: v.item() for k, v in out.items()
            if k not in skip and torch.is_tensor(v) and v.ndim == 0}


def run_training(run_dir: str) -> int:
    die_with_launcher()
    run = RunDir(Path(run_dir))
    profile = load_profile(run.profile)
    trainer = None
    try:
        trainer = Trainer(run, profile)
        trainer.fit()
    except BaseException as exc:  # every failure is recorded before the process ends
        rank = trainer.rank if trainer else int(os.environ.get("RANK", 0))
        record = write_rank_error(run, rank, exc)
        peers = trainer.peers if trainer is not None else None
        if peers is not None:
            peers.publish(record)
        if trainer is not None and trainer.writer:
            cause = root_cause(run, record, peers=peers.records if peers else None)
            trainer.open_events()
            trainer.emit("run_failed", error=cause["error"], traceback=cause["traceback"],
                         rank=cause["rank"], user=bool(cause.get("user")))
        print(f"[sslterm] rank {rank} failed: {record['error']}", flush=True)
        if not isinstance(exc, (UserError, TrainingError, KeyboardInterrupt)):
            traceback.print_exc()
        return 1
    finally:
        if trainer is not None and trainer.events is not None:
            trainer.events.close()
    try:
        trainer.shutdown()
    except Exception as exc:  # after the run's final event: recorded, but the outcome stands
        record = write_rank_error(run, trainer.rank, exc)
        print(f"[sslterm] rank {trainer.rank}: unclean shutdown after the run ended: "
              f"{record['error']}", flush=True)
        return 1
    return 0
