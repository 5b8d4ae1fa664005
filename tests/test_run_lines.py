"""What the trainer says about a run in its log (printed by ``sslterm run`` and the app's
log pane): a warm start names the file its weights came from, and a stop names the epochs
done. The real Trainer in this process on the CPU, on the smoke profile."""

from __future__ import annotations

import pytest
from runhelpers import SMOKE, events
from safetensors.torch import save_file

from sslterm.profile.load import load_profile
from sslterm.runs.store import RunDir
from sslterm.train.engine import Trainer
from sslterm.train.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
SHORT = ["launch.cpu=true", "train.max_steps_per_epoch=3", "probe.enabled=false",
         "train.val_interval=0"]


def messages(run: RunDir) -> list[str]:
    return [e["message"] for e in events(run.path) if e["kind"] == "log"]


@pytest.mark.parametrize(("stop_after", "words", "mid_epoch"), [
    (3, "stopped after epoch 0 (1 of 3 epochs done)", False),  # the last step of epoch 0
    (4, "stopped in epoch 1 at step 4 (1 of 3 epochs done)", True),
])
def test_a_warm_start_is_said_and_a_stop_names_the_epochs_done(tmp_path, stop_after, words,
                                                               mid_epoch):
    """Before: no word of ``model.init_from`` on the console, and "stopped at epoch 1" for a
    run whose epoch 1 had not run."""
    weights = tmp_path / "encoder.safetensors"
    encoder = build_model(load_profile(SMOKE, SHORT), 32, 4).model.eval_encoder()
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, weights)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    trainer = Trainer(run, load_profile(SMOKE, [*SHORT, f"model.init_from={weights}"]))

    def stop_at(step: int) -> None:  # a watcher's STOP file, right after that step
        if step == stop_after:
            run.stop_file.touch()

    trainer.faults = {"test": "stop"}  # the hook runs only where a fault is set
    trainer.fault_after_step = stop_at
    trainer.fit()
    trainer.events.close()

    said = messages(run)
    assert f"warm start (model.init_from): encoder weights from {weights}" in said
    assert f"{words}; resume continues here" in said
    stopped = next(e for e in events(run.path) if e["kind"] == "run_stopped")
    assert (stopped["epoch"], stopped["step"]) == (1, stop_after)
    assert (stopped["epochs"], stopped["mid_epoch"]) == (3, mid_epoch)
