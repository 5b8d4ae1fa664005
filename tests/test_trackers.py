"""Experiment trackers (``launch.log_with``): a real run's TensorBoard files hold every
metric of its event log at its global step, and the profile as hyperparameters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from runhelpers import SMOKE, events, only_run, sslterm

from sslterm.errors import ProfileError
from sslterm.profile.load import validate_text
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.store import RunDir
from sslterm.train.trackers import create, flat_config, metrics


def test_metric_events_become_named_numbers_and_others_nothing():
    event = {"v": 1, "kind": "val", "t": 1.5, "epoch": 2, "step": 40, "loss": 3.5,
             "top1": 50.0, "knn_top1": None, "protocol": "linear", "flag": True}
    assert metrics("val", event) == {"val/loss": 3.5, "val/top1": 50.0}
    assert metrics("step", {"step": 3, "loss": 1.0, "lr": 0.1, "momentum": 0.99}) == {
        "step/loss": 1.0, "step/lr": 0.1, "step/momentum": 0.99}
    assert metrics("checkpoint", {"step": 3, "seconds": 1.0}) == {}
    assert metrics("run_started", {"step": 0, "epochs": 3}) == {}


def test_the_profile_as_config_is_what_tensorboard_takes(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    config = flat_config(validate_text("[launch]\nlog_with = ['tensorboard']\n"))
    assert config["launch.log_with"] == "['tensorboard']"
    assert config["train.epochs"] == 100 and config["augment.crop_scale"] == "[0.08, 1.0]"
    with SummaryWriter(tmp_path) as writer:  # refuses lists and None
        writer.add_hparams(config, metric_dict={})


@pytest.mark.parametrize(("text", "overrides", "expected"), [
    ("[launch]\nlog_with = ['tensorbord']\n", [],
     "p.toml:2: launch.log_with: must be one of 'tensorboard', 'wandb' or 'mlflow' "
     "(got 'tensorbord'); did you mean 'tensorboard'?"),
    ("[launch]\nlog_with = ['tensorboard', 'tensorboard']\n", [],
     "p.toml:2: launch.log_with: names 'tensorboard' twice"),
    ("", ["launch.log_with=tensorboard,tensorbord"],
     "<command line>: launch.log_with: must be one of 'tensorboard', 'wandb' or 'mlflow' "
     "(got 'tensorbord'); did you mean 'tensorboard'?"),
])
def test_bad_tracker_lists_are_one_line_errors(text, overrides, expected):
    with pytest.raises(ProfileError) as err:
        validate_text(text, "p.toml", overrides)
    assert str(err.value) == expected


def test_a_list_may_be_written_as_names_with_commas():
    profile = validate_text("", "p.toml", ["launch.log_with=tensorboard"])
    assert profile.launch.log_with == ["tensorboard"]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_tracker_that_is_not_installed_names_its_extra():
    with pytest.raises(ProfileError) as err:
        validate_text("[launch]\nlog_with = ['tensorboard', 'wandb']\n", "p.toml")
    assert str(err.value) == (
        "p.toml:2: launch.log_with: wandb is not installed; pip install 'sslterm[wandb]'")


def board(run: Path) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard shows for the run: tag -> {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run / "tensorboard"))
    reader.Reload()
    return {tag: {s.step: s.value for s in reader.Scalars(tag)}
            for tag in reader.Tags()["scalars"]}


def test_a_resumed_run_replaces_what_came_after_its_checkpoint(tmp_path):
    profile = validate_text("[launch]\nlog_with = ['tensorboard']\n")
    run = RunDir(tmp_path)

    def segment(steps: range, loss: float) -> None:
        (tracker,) = create(profile, run)
        tracker.start()
        for step in steps:
            tracker.log({"step/loss": loss}, step=step)
        tracker.finish()

    segment(range(1, 7), 1.0)  # stopped at step 6, after a checkpoint at step 4
    (tmp_path / "checkpoints" / "tmp").mkdir(parents=True)
    ckpt.commit(tmp_path / "checkpoints" / "tmp", tmp_path / "checkpoints" / "step-4",
                {"global_step": 4})
    segment(range(5, 9), 2.0)  # resumed from step 4
    assert board(tmp_path) == {"step/loss": {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0,
                                             5: 2.0, 6: 2.0, 7: 2.0, 8: 2.0}}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_tensorboard_holds_every_metric_of_the_event_log(tmp_path):
    runs = tmp_path / "runs"
    sslterm("-o", str(runs), "run", str(SMOKE), "launch.log_with=tensorboard",
            "train.epochs=2", "train.max_steps_per_epoch=2", "probe.interval=1", "probe.epochs=2",
            cwd=tmp_path, check=True)
    run = only_run(runs)
    logged = {}
    for event in events(run):
        for tag, value in metrics(event["kind"], event).items():
            logged[tag, event["step"]] = value
    kinds = {tag.split("/")[0] for tag, _ in logged}
    assert kinds == {"step", "epoch", "val", "probe"}

    read = {(tag, step): value for tag, values in board(run).items()
            for step, value in values.items()}
    assert read.keys() == logged.keys()
    for key, value in logged.items():
        assert read[key] == pytest.approx(value, rel=1e-6), key

    (hparams,) = (run / "tensorboard").glob("*/hparams.yml")
    config = yaml.safe_load(hparams.read_text())
    assert config["train.epochs"] == 2 and config["launch.log_with"] == "['tensorboard']"
