"""The training engine: one Accelerate process of a run, driven by the frozen profile.

Every process runs this; only the global main process writes events, status
and checkpoint metadata. Control (stop requests, SIGTERM) is decided on all
ranks together at log intervals, so the hot loop has no host-device sync
except the one loss read every ``train.log_every`` steps.

Fault injection for the tests: ``SSLTERM_FAULT_*`` environment variables, inert
unless set (docs/events.md lists them); ``Trainer.faults`` holds them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import shutil
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import SCALER_NAME, InitProcessGroupKwargs, set_seed
from timm.utils import distribute_bn

from sslterm.data.augment import BatchAugment
from sslterm.data.datasets import Transformed
from sslterm.data.evalset import eval_batches
from sslterm.data.registry import Splits, build_splits
from sslterm.data.sampler import ShardedBatches, ShardedBatchSampler
from sslterm.data.transforms import TwoViews, simclr_view
from sslterm.errors import UserError
from sslterm.eval.features import extract_features
from sslterm.eval.linear import train_linear_probe
from sslterm.eval.sharded import gather_to_main, sharded_knn_accuracy
from sslterm.methods.registry import get_method
from sslterm.models import create_encoder, projector
from sslterm.profile.load import load_profile
from sslterm.profile.schema import ProbeConfig, Profile
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.events import EventWriter, append_resumed, json_safe
from sslterm.runs.store import RunDir, atomic_write_text
from sslterm.runs.supervise import is_collateral, rank_errors
from sslterm.runs.supervise import root_cause as first_failure
from sslterm.train.optim import build_optimizer, lr_at, param_groups, scaled_lr
from sslterm.train.schedule import checkpoint_due, probe_due, val_due

# How long a rank waits in a collective for the others. Evaluation runs kNN and the linear
# probe while the other ranks wait (the probe on rank 0 alone), and on ImageNet that takes
# minutes, past NCCL's default of 10; a truly hung rank is still ended, only later.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


class StopRun(Exception):
    """Raised on every rank when a graceful stop was agreed."""


class TrainingError(Exception):
    """A run-ending problem that is not a bug (non-finite loss, bad resume)."""


@dataclass
class Position:
    epoch: int = 0  # epoch in progress
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    global_step: int = 0


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


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


def keep_resident(mode: str, nbytes: int, free_bytes: int) -> bool:
    """Whether the cached training images live on the GPU: always for ``data.augment =
    "gpu"``; for "auto" when they take at most half the free memory (the rest is for
    the model and activations). Otherwise batches are copied over per step."""
    return mode == "gpu" or nbytes <= free_bytes // 2


def eval_rows(n: int, cap: int, seed: int) -> torch.Tensor:
    """Indices of the images an evaluation uses: all ``n``, or (``cap`` > 0) a fixed random
    subset of ``cap``, sorted and the same at every evaluation, so that kNN on a huge dataset
    stays affordable and its numbers stay comparable over the run."""
    if cap == 0 or cap >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def eval_cost(probe: ProbeConfig, n_train: int, n_val: int, dim: int, world: int) -> str:
    """One line on what an evaluation costs, so a huge dataset's price is seen at run start
    (and ``probe.knn_max_*`` can be set) rather than found out hours later."""
    parts = []
    if probe.knn:
        bank = min(n_train, probe.knn_max_train or n_train)
        queries = min(n_val, probe.knn_max_queries or n_val)
        parts.append(f"kNN {queries:,} queries x {bank:,} bank x {dim}-d = "
                     f"{2 * queries * bank * dim / 1e12:.3g} TFLOP per validation, "
                     f"{math.ceil(bank / world) * dim * 4 / 2**20:.1f} MiB of bank per process")
    if probe.enabled:
        parts.append(f"linear probe on {n_train:,} x {dim}-d features "
                     f"({n_train * dim * 4 / 2**20:.1f} MiB) on the main process only")
    hours = COLLECTIVE_TIMEOUT.total_seconds() / 3600
    return (f"evaluation: {'; '.join(parts) or 'off'}; other processes wait up to "
            f"{hours:g} h for it")


def shard(n: int, rank: int, world: int) -> torch.Tensor:
    """Contiguous, equal-length index shards (the last padded by repeating) for eval."""
    per = math.ceil(n / world)
    idx = torch.arange(rank * per, (rank + 1) * per)
    return idx.clamp_(max=n - 1)


class Trainer:
    def __init__(self, run: RunDir, profile: Profile) -> None:
        self.run, self.p = run, profile
        t = profile.train
        self.acc = Accelerator(
            mixed_precision=t.precision,
            gradient_accumulation_steps=t.accumulate,
            # Without a GPU, cpu=True is what makes a multi-process launch a gloo group.
            cpu=profile.launch.cpu or not torch.cuda.is_available(),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)],
        )
        self.main = self.acc.is_main_process
        expected = int(os.environ.get("WORLD_SIZE", "1"))
        if self.acc.num_processes != expected:
            raise TrainingError(
                f"launched {expected} processes but Accelerate formed a group of "
                f"{self.acc.num_processes}; check the accelerate config / launch settings"
            )
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
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

    def open_events(self) -> None:
        if self.main and self.events is None:
            self.events = EventWriter(self.run.path)

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
        self.splits: Splits = build_splits(p.data, t.seed)
        info = self.splits.info
        self.size = p.data.image_size or info.image_size
        encoder, self.feature_dim, self.small_stem = create_encoder(
            p.model.encoder, image_size=self.size, small_stem=p.model.small_stem,
            pretrained=p.model.pretrained,
        )
        head = projector(p.model.projector, self.feature_dim, p.model.projector_hidden_dim,
                         p.model.projector_dim)
        method = get_method(p.model.method)
        model = method(encoder, self.feature_dim, head, p.model.temperature,
                       num_classes=info.num_classes if t.online_probe else 0)
        self.device = self.acc.device
        if self.device.type == "cuda":  # as timm's train.py: training shapes are fixed (drop_last)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
        if p.model.sync_batchnorm and self.world > 1:
            if self.device.type == "cpu":
                raise UserError("model.sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=self.memory_format)
        if t.compile:  # in place: checkpoint keys stay the same, so resume may toggle it
            model.encoder.compile()

        self.per_rank = t.batch_size // self.world
        self.batched = p.data.augment == "gpu" or (
            p.data.augment == "auto" and info.small and p.data.cache
        )
        n_train = len(self.splits.train)
        if n_train < t.batch_size:
            raise UserError(
                f"train.batch_size {t.batch_size} is larger than the {n_train} training images"
            )
        self.sampler = ShardedBatches(n_train, self.per_rank, self.rank, self.world, t.seed)
        micro = len(self.sampler) - len(self.sampler) % t.accumulate
        self.steps_per_epoch = micro // t.accumulate
        if t.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.warmup_steps = round(t.warmup_epochs * self.steps_per_epoch)
        self.peak_lr = scaled_lr(t.base_lr, t.batch_size * t.accumulate, t.lr_scaling)
        self.probe_lr_scale = 1.0

        opt = build_optimizer(
            t.optimizer, param_groups(model, t.weight_decay), self.peak_lr,
            momentum=t.momentum, weight_decay=t.weight_decay,
            trust_coefficient=t.lars_trust_coefficient, betas=t.betas,
            fused=self.device.type == "cuda",
        )
        self.model, self.opt = self.acc.prepare(model, opt)
        self._setup_data()

    @property
    def augment_path(self) -> str:
        if not self.batched:
            return "cpu"
        if self.device.type != "cuda":
            return "batched-cpu"
        return "gpu" if self.resident else "gpu-streamed"

    def _setup_data(self) -> None:
        info, a = self.splits.info, self.p.augment
        if self.batched:
            with self.acc.main_process_first():  # decode once; the other ranks read the cache
                tensors = self.splits.tensors("train")
            self.resident = True
            if self.device.type == "cuda":
                free, nbytes = torch.cuda.mem_get_info(self.device)[0], tensors.images.nbytes
                if self.p.data.augment == "gpu" and nbytes > free:
                    raise UserError(
                        f"data.augment: 'gpu' keeps the {nbytes / 2**30:.1f} GiB of cached "
                        f"images on the GPU, which has {free / 2**30:.1f} GiB free; use 'auto'"
                    )
                self.resident = keep_resident(self.p.data.augment, nbytes, free)
            dev = self.device if self.resident else torch.device("cpu")
            self.train_images = tensors.images.to(dev)
            self.train_labels = tensors.labels.to(dev)
            self.augment = BatchAugment(a, self.size, info.mean, info.std).to(self.device)
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(self.p.train.seed * 1000 + self.rank)
        else:
            self.batch_sampler = ShardedBatchSampler(self.sampler)
            views = TwoViews(simclr_view(a, self.size, info.mean, info.std))
            workers = self.p.data.num_workers
            self.loader = torch.utils.data.DataLoader(
                Transformed(self.splits.train, views),
                batch_sampler=self.batch_sampler,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=self.device.type == "cuda",
            )

    # -- batches ---------------------------------------------------------------------
    def epoch_batches(self, epoch: int, skip: int):  # noqa: ANN201 - generator of tensors
        t = self.p.train
        start, stop = skip * t.accumulate, self.steps_per_epoch * t.accumulate
        if self.batched:
            for idx in self.sampler.epoch(epoch)[start:stop]:
                idx = idx.to(self.train_images.device, non_blocking=True)
                imgs = self.train_images[idx].to(self.device, non_blocking=True)
                x1, x2 = self.augment(imgs, generator=self.generator)
                yield x1, x2, self.train_labels[idx].to(self.device, non_blocking=True)
        else:
            self.batch_sampler.set_epoch(epoch, start, stop)
            for (x1, x2), y in self.loader:
                yield (x1.to(self.device, non_blocking=True), x2.to(self.device, non_blocking=True),
                       y.to(self.device, non_blocking=True))

    def local_features(self, split: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-encoder features and labels, on the device, of this rank's shard of ``rows``
        (image indices into the split; equal-length shards, see :func:`shard`)."""
        idx = rows[shard(len(rows), self.rank, self.world)]
        encoder = self.acc.unwrap_model(self.model).encoder
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.p.train.precision)
        batches = eval_batches(
            self.splits, split, idx, size=self.size, batch_size=self.p.train.predict_batch_size,
            device=self.device, use_tensors=self.batched, num_workers=self.p.data.num_workers,
        )
        feats, labels = extract_features(
            encoder, batches, self.device,
            channels_last=self.memory_format == torch.channels_last, autocast_dtype=dtype,
        )
        return feats.to(self.device), labels.to(self.device)

    def features(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Features of the whole split on the main process's device, None on the others:
        only the main process trains the probe, so no other holds the full set."""
        n = len(getattr(self.splits, split))
        feats, labels = (gather_to_main(t) for t in self.local_features(split, torch.arange(n)))
        return None if feats is None or labels is None else (feats[:n], labels[:n])

    def knn(self) -> dict[str, float] | None:
        """kNN top-1/5 of the held-out split against the training features (each capped by
        ``probe.knn_max_*``) on the main process, None on the others; every rank keeps only
        its shard of the bank, on its device (:func:`sharded_knn_accuracy`)."""
        pr, seed = self.p.probe, self.p.train.seed
        bank_rows = eval_rows(len(self.splits.train), pr.knn_max_train, seed)
        query_rows = eval_rows(len(self.splits.val), pr.knn_max_queries, seed + 1)
        bank, bank_labels = self.local_features("train", bank_rows)
        offset = self.rank * len(bank)
        real = max(0, min(len(bank), len(bank_rows) - offset))  # the last shard's padding out
        queries, query_labels = self.local_features("val", query_rows)
        if self.world > 1:
            queries, query_labels = self.acc.gather(queries), self.acc.gather(query_labels)
        n = len(query_rows)
        return sharded_knn_accuracy(
            bank[:real], bank_labels[:real], offset, queries[:n], query_labels[:n],
            self.splits.info.num_classes, bank_size=len(bank_rows), k=pr.knn_k,
            temperature=pr.knn_temperature,
        )

    # -- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, pos: Position, complete_epoch: bool) -> str:
        start = time.time()
        name = ckpt.checkpoint_name(pos.global_step)
        tmp = self.run.checkpoints / f"{ckpt.TMP_PREFIX}{name}"
        if self.main:
            self.run.checkpoints.mkdir(exist_ok=True)
        self.acc.wait_for_everyone()
        try:
            self.acc.save_state(str(tmp), safe_serialization=True)
            if self.main and self.faults.get("ENOSPC_AT_STEP") == str(pos.global_step):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "optimizer.bin"))
            self.acc.wait_for_everyone()
            if self.main:
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
        if self.main:
            time.sleep(float(self.faults.get("SLEEP_AFTER_COMMIT", 0)))
            ckpt.prune(self.run.checkpoints, self.p.train.keep_checkpoints)
            self.emit("checkpoint", epoch=pos.epoch, step=pos.global_step,
                      path=f"checkpoints/{name}", complete_epoch=complete_epoch,
                      seconds=round(time.time() - start, 3))
        self.acc.wait_for_everyone()
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
        found = ckpt.newest_checkpoint(self.run.checkpoints)
        if self.main:
            ckpt.remove_partial(self.run.checkpoints)
        if found is None:
            if self.main:
                append_resumed(self.run.path, 0, 0, None)
            return Position(), False
        path, state = found
        if state.get("world_size") != self.world:
            raise TrainingError(
                f"checkpoint {path.name} was taken with {state.get('world_size')} processes; "
                f"resume with {state.get('world_size')} (launch.num_processes x num_machines), "
                f"not {self.world}"
            )
        conflict = ckpt.settings_conflict(path.name, state.get("settings", {}),
                                          self.checkpoint_settings())
        if conflict:
            raise UserError(conflict)
        self.acc.wait_for_everyone()
        try:
            self.load_state(path)
        except pickle.UnpicklingError as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise TrainingError(
                f"checkpoint {path.name} holds more than tensors and was refused by the "
                f"safe loader (weights_only): {first}"
            ) from exc
        if self.main:
            append_resumed(self.run.path, state["epoch"], state["global_step"],
                           f"checkpoints/{path.name}")
        pos = Position(state["epoch"], state["step_in_epoch"], state["global_step"])
        if pos.step_in_epoch >= self.steps_per_epoch:
            pos = Position(pos.epoch + 1, 0, pos.global_step)
        self.load_history()
        return pos, True

    def checkpoint_settings(self) -> dict[str, Any]:
        """The settings that shape the model's and the optimizer's saved tensors (names,
        shapes, state kinds), recorded in each checkpoint: a resume that changes one of
        them cannot load it. Layout, compile and precision convert (:meth:`load_state`)."""
        m, t = self.p.model, self.p.train
        return {
            "model.method": m.method, "model.encoder": m.encoder,
            "model.small_stem": "on" if self.small_stem else "off",
            "model.projector": m.projector, "model.projector_hidden_dim": m.projector_hidden_dim,
            "model.projector_dim": m.projector_dim, "train.optimizer": t.optimizer,
            "train.online_probe": t.online_probe,
            "online probe classes": self.splits.info.num_classes if t.online_probe else 0,
        }

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

    def load_history(self) -> None:
        from sslterm.runs.events import read_events

        for e in read_events(self.run.path):
            kind = e["kind"]
            if kind == "epoch":
                self.history.epochs.append(e)
            elif kind == "val":
                self.history.val.append(e)
            elif kind == "probe":
                self.history.probes.append(e)

    def fault_after_step(self, step: int) -> None:
        """Test hooks after an optimizer step (module docstring); only when one is set."""
        f = self.faults
        if f.get("RAISE_AT_STEP") == str(step) and f.get("RAISE_ON_RANK", "0") == str(self.rank):
            raise RuntimeError(f"injected fault on rank {self.rank} at step {step}")
        time.sleep(float(f.get("STEP_SLEEP", 0)))

    # -- control ---------------------------------------------------------------------
    def agree_to_stop(self) -> bool:
        if self.main and self.run.stop_file.exists():
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
        self.emit(
            "run_started", run_id=self.run.id, profile=p.name, dataset=p.data.dataset,
            encoder=p.model.encoder, world_size=self.world, num_machines=p.launch.num_machines,
            devices=device_names(self.device), epochs=t.epochs,
            steps_per_epoch=self.steps_per_epoch, global_batch=t.batch_size,
            peak_lr=self.peak_lr, precision=t.precision,
            augment=self.augment_path,
            small_stem=self.small_stem, start_epoch=pos.epoch, start_step=pos.global_step,
            resumed=resumed, host=socket.gethostname(), pid=os.getpid(),
        )
        self.log(
            f"{p.model.encoder} on {p.data.dataset}: {len(self.splits.train)} train / "
            f"{len(self.splits.val)} val / {len(self.splits.test)} test images, "
            f"{self.world} process(es), {self.steps_per_epoch} steps/epoch"
        )
        self.log(eval_cost(p.probe, len(self.splits.train), len(self.splits.val),
                           self.feature_dim, self.world))
        try:
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
            self.log(f"stopped at epoch {pos.epoch} step {pos.global_step}; resume continues here")
            self.emit("run_stopped", epoch=pos.epoch, step=pos.global_step, checkpoint=path)
            return
        results = self.finish(pos)
        self.emit("run_finished", epoch=t.epochs - 1, step=pos.global_step, results=results)

    def train_epoch(self, epoch: int, pos: Position) -> None:
        t = self.p.train
        self.model.train()
        start, images = time.time(), 0
        tick, tick_images = time.time(), 0
        loss_sum = torch.zeros((), device=self.device)
        probe_correct = torch.zeros((), device=self.device, dtype=torch.long)
        micro_done = 0
        for x1, x2, y in self.epoch_batches(epoch, pos.step_in_epoch):
            x1 = x1.contiguous(memory_format=self.memory_format)
            x2 = x2.contiguous(memory_format=self.memory_format)
            with self.acc.accumulate(self.model):
                with self.acc.autocast():
                    out = self.model(x1, x2, y if t.online_probe else None)
                self.acc.backward(out["loss"])
                if self.acc.sync_gradients:
                    lr = lr_at(pos.global_step, self.total_steps, self.warmup_steps,
                               self.peak_lr, t.min_lr_ratio)
                    for group in self.opt.param_groups:
                        group["lr"] = lr
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
                          ips=round(tick_images / max(now - tick, 1e-9), 1))
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
        """Average BatchNorm running statistics over the ranks (timm's ``distribute_bn``)
        before an evaluation or a checkpoint: each rank updates its own from its part of the
        batch (DDP broadcasts rank 0's only at the next training forward), so otherwise every
        rank evaluates a different encoder and the checkpoint holds rank 0's alone."""
        if self.world > 1:
            distribute_bn(self.model, self.world, reduce=True)

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

    def val_views(self, idx: torch.Tensor, bs: int):  # noqa: ANN201 - generator
        """Two augmented views of held-out images, the same every validation (fixed seed)."""
        if self.batched:
            data = self.splits.tensors("val")
            gen = torch.Generator(device=self.device).manual_seed(self.p.train.seed + 7)
            for chunk in idx.split(bs):
                if len(chunk) >= 2:
                    yield self.augment(data.images[chunk].to(self.device), generator=gen)
            return
        info = self.splits.info
        views = TwoViews(simclr_view(self.p.augment, self.size, info.mean, info.std))
        dataset = torch.utils.data.Subset(Transformed(self.splits.val, views), idx.tolist())
        with torch.random.fork_rng(devices=[]):  # the transforms use the CPU generator alone
            torch.default_generator.manual_seed(self.p.train.seed + 7)
            for (x1, x2), _ in torch.utils.data.DataLoader(dataset, batch_size=bs):
                if len(x1) >= 2:
                    yield x1.to(self.device), x2.to(self.device)

    @torch.no_grad()
    def validate(self, epoch: int, pos: Position) -> None:
        """SSL loss and contrastive top-1/5 on the held-out split, kNN on frozen features."""
        if len(self.splits.val) == 0:
            return
        model = self.acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        n = len(self.splits.val)
        idx = torch.unique_consecutive(shard(n, self.rank, self.world))  # no padded repeats
        totals = torch.zeros(4, device=self.device)
        for x1, x2 in self.val_views(idx, min(self.per_rank, len(idx))):
            with self.acc.autocast():
                out = _local_loss(model, x1, x2)
            m = type(model).metrics(out)
            b = float(len(x1))
            totals += torch.stack([out["ssl_loss"].float() * b, m["top1"] * b, m["top5"] * b,
                                   torch.tensor(b, device=self.device)])
        totals = self.acc.reduce(totals, "sum")
        record: dict[str, Any] = {"epoch": epoch, "step": pos.global_step}
        if totals[3] > 0:
            record.update(loss=(totals[0] / totals[3]).item(), top1=(totals[1] / totals[3]).item(),
                          top5=(totals[2] / totals[3]).item())
        if self.p.probe.knn:
            acc = self.knn()
            if acc is not None:
                record.update(knn_top1=acc["top1"], knn_top5=acc["top5"])
        model.train(was_training)
        self.history.val.append(record)
        self.emit("val", **record)

    def linear_probe(self, epoch: int, pos: Position) -> dict[str, Any] | None:
        """Offline linear evaluation on frozen features (original protocol)."""
        start = time.time()
        pr = self.p.probe
        feats = {s: self.features(s) for s in ("train", "val", "test") if len(getattr(self.splits, s))}
        record = None
        if self.main:
            result = train_linear_probe(
                feats["train"], self.splits.info.num_classes, epochs=pr.epochs,
                batch_size=pr.batch_size, base_lr=pr.base_lr, weight_decay=pr.weight_decay,
                momentum=pr.momentum, seed=self.p.train.seed,
                evaluate={k: v for k, v in feats.items() if k != "train"},
                device=self.device, eval_batch_size=pr.val_batch_size,
            )
            record = {"epoch": epoch, "step": pos.global_step, "protocol": "linear"}
            for split, metrics in result.metrics.items():
                for name, value in metrics.items():
                    record[f"{split}_{name}"] = value
            record["seconds"] = round(time.time() - start, 3)
            self.history.probes.append(record)
            self.emit("probe", **record)
        self.acc.wait_for_everyone()
        return record

    def finish(self, pos: Position) -> dict[str, Any]:
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
        self.acc.end_training()


def _local_loss(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
    """Validation loss with local negatives only (no collectives inside a no-grad eval)."""
    from sslterm.methods.losses import nt_xent

    b = x1.shape[0]
    z = model.projector(model.encoder(torch.cat([x1, x2])))
    loss, logits, positive = nt_xent(z[:b], z[b:], model.temperature)
    return {"ssl_loss": loss, "logits": logits, "positive": positive}


def device_names(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [torch.cuda.get_device_name(device)]
    return [f"cpu ({os.cpu_count()} cores)"]


def _final(records: list[dict[str, Any]], key: str) -> Any:
    for r in reversed(records):
        if r.get(key) is not None:
            return r[key]
    return None


def build_results(p: Profile, h: History, run: RunDir) -> dict[str, Any]:
    """Final numbers, each named by protocol; the last value, never the best one."""
    newest = ckpt.newest_checkpoint(run.checkpoints)
    final_probe = h.probes[-1] if h.probes else None
    results: dict[str, Any] = {
        "run_id": run.id,
        "profile": p.name,
        "dataset": p.data.dataset,
        "encoder": p.model.encoder,
        "epochs": p.train.epochs,
        "checkpoint": f"checkpoints/{newest[0].name}" if newest else None,
        "final": {
            "ssl_train_loss": _final(h.epochs, "loss"),
            "ssl_val_loss": _final(h.val, "loss"),
            "contrastive_val_top1": _final(h.val, "top1"),
            "contrastive_val_top5": _final(h.val, "top5"),
        },
        "history": {
            "epochs": [{k: e.get(k) for k in ("epoch", "loss", "lr", "ips", "seconds", "online_top1")}
                       for e in h.epochs],
            "val": [{k: v for k, v in e.items() if k not in ("v", "kind", "t")} for e in h.val],
            "linear_eval": [{k: v for k, v in e.items() if k not in ("v", "kind", "t")}
                            for e in h.probes],
        },
    }
    if final_probe:
        results["final"]["linear_eval"] = {
            "protocol": "offline linear eval: frozen encoder, eval mode, un-augmented images",
            "epoch": final_probe["epoch"],
            **{k: final_probe[k] for k in final_probe if k.endswith(("_top1", "_top5"))},
        }
    if h.val and _final(h.val, "knn_top1") is not None:
        results["final"]["knn"] = {
            "protocol": f"weighted kNN (k={p.probe.knn_k}, T={p.probe.knn_temperature}) "
            "on the held-out split",
            "val_top1": _final(h.val, "knn_top1"),
            "val_top5": _final(h.val, "knn_top5"),
        }
    if p.train.online_probe and h.epochs:
        results["final"]["online_probe"] = {
            "protocol": "online linear probe on detached features of augmented training views",
            "train_top1": _final(h.epochs, "online_top1"),
        }
    return json_safe(results)


def write_rank_error(run: RunDir, rank: int, exc: BaseException) -> dict[str, str]:
    summary = (
        str(exc) if isinstance(exc, (UserError, TrainingError))
        else f"{type(exc).__name__}: {exc}"
    )
    record = {"rank": rank, "error": summary.splitlines()[0] if summary else type(exc).__name__,
              "traceback": "".join(traceback.format_exception(exc))[-4000:]}
    atomic_write_text(run.path / f"error-rank{rank}.json", json.dumps(record, indent=2))
    return record


def root_cause(run: RunDir, record: dict[str, Any], wait: float = 3.0) -> dict[str, Any]:
    """The run's root cause by the supervisor's rule (:func:`sslterm.runs.supervise.root_cause`),
    waiting up to ``wait`` s for the failed rank's record when this rank only saw its
    connection break (a rank writes its record before it exits and closes its sockets)."""
    deadline = time.time() + wait
    while True:
        cause = first_failure([record, *rank_errors(run)])
        if not is_collateral(cause) or time.time() >= deadline:
            return cause
        time.sleep(0.1)


def die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own, out of reach of a signal to the
    run's process group (``sslterm kill``, a SIGKILL to the supervisor's group): on Linux,
    have the kernel SIGKILL such a rank when its launcher dies, so none is left behind."""
    if not sys.platform.startswith("linux") or os.getsid(0) != os.getpid():
        return  # in the run's process group (one process): SIGTERM still stops it gracefully
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if parent == 1 or os.getppid() != parent:  # the launcher died before that
        os._exit(1)


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
        if trainer is not None and trainer.main:
            cause = root_cause(run, record)
            trainer.open_events()
            trainer.emit("run_failed", error=cause["error"], traceback=cause["traceback"],
                         rank=cause["rank"])
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
