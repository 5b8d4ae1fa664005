"""Experiment trackers (``launch.log_with``): every metric the engine emits, sent on to
TensorBoard, Weights & Biases or MLflow through Accelerate's tracker API.

The run directory stays the one record; a tracker gets a copy. What the trackers write
stays local unless the user says otherwise: TensorBoard into ``RUN/tensorboard``, wandb
offline into ``RUN/wandb`` (unless ``WANDB_MODE`` is set), MLflow into a file store at
``RUN/mlruns`` (unless ``MLFLOW_TRACKING_URI`` is set). Only the main process logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker

from sslterm.profile.edit import flatten
from sslterm.profile.load import frozen_data
from sslterm.profile.schema import Profile
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.events import EventWriter
from sslterm.runs.store import RunDir

# The event kinds whose numbers are metrics, and the fields of theirs that are not.
METRIC_KINDS = ("step", "epoch", "val", "probe")
NOT_METRICS = ("v", "kind", "t", "epoch", "step")


def create(profile: Profile, run: RunDir) -> list[GeneralTracker]:
    """The trackers ``launch.log_with`` names, for ``Accelerator(log_with=...)``; they
    start on the main process in :func:`start`."""
    made = {
        "tensorboard": lambda: TensorBoardTracker(
            "tensorboard", run.path, purge_step=resumes_at(run)),
        "wandb": lambda: _wandb(profile, run),
        "mlflow": lambda: _mlflow(profile, run),
    }
    return [made[name]() for name in profile.launch.log_with]


def resumes_at(run: RunDir) -> int | None:
    """The first step a resumed run logs (None for a fresh one): TensorBoard then drops what
    the previous segment logged from there on, as the event log's readers do."""
    newest = ckpt.newest_checkpoint(run.checkpoints)
    return None if newest is None else newest[1]["global_step"] + 1


def _wandb(profile: Profile, run: RunDir) -> WandBTracker:
    os.environ.setdefault("WANDB_MODE", "offline")
    return WandBTracker(profile.name, name=run.id, dir=str(run.path))


def _mlflow(profile: Profile, run: RunDir) -> MLflowTracker:
    if "MLFLOW_TRACKING_URI" not in os.environ:  # a file store in the run directory
        os.environ["MLFLOW_TRACKING_URI"] = (run.path / "mlruns").resolve().as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this
    return MLflowTracker(experiment_name=profile.name, run_name=run.id)


def flat_config(profile: Profile) -> dict[str, str | int | float | bool]:
    """The profile as ``section.key`` -> value, lists as text: every tracker takes that
    (TensorBoard's hparams refuse lists, MLflow keeps parameters as text anyway)."""
    return {key: str(value) if isinstance(value, list) else value
            for key, value in flatten(frozen_data(profile, mode="json"))}


def start(accelerator: Accelerator, profile: Profile) -> None:
    """Open each tracker's run with the profile as its config (main process only)."""
    if accelerator.log_with:
        accelerator.init_trackers(profile.name, config=flat_config(profile))


def metrics(kind: str, event: dict[str, Any]) -> dict[str, float]:
    """The numbers of an event, named ``kind/field`` (``step/loss``, ``val/knn_top1``)."""
    if kind not in METRIC_KINDS:
        return {}
    return {
        f"{kind}/{key}": value for key, value in event.items()
        if key not in NOT_METRICS and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


class TrackedEvents(EventWriter):
    """The run's event log, whose metric events also go to the trackers at their global
    step: one place where everything the engine reports passes."""

    def __init__(self, run_dir: Path | str, accelerator: Accelerator) -> None:
        super().__init__(run_dir)
        self.accelerator = accelerator

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = super().emit(kind, **fields)
        values = metrics(kind, event)
        if values and self.accelerator.trackers:
            self.accelerator.log(values, step=event["step"])
        return event
