"""Run directories made before each method had its own profile section still resume.

Such a run's ``profile.toml`` holds SimCLR's keys under ``[model]`` (``model.temperature``,
``model.projector*``), its checkpoints record ``model.projector*`` settings, and their state
dict and optimizer have the layout recorded below from the engine of that time (commit
9ff1f04, ``profiles/smoke.toml``). The run here is made by today's code, put into that form,
checked against the recorded layout, and resumed through the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomlkit
import torch
from runhelpers import SMOKE, events, only_run, sslterm, state
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# beside the timm encoder's own keys under "encoder.": the keys of the old SimCLR module
OLD_HEAD_KEYS = ["online_probe.bias", "online_probe.weight", "projector.0.bias",
                 "projector.0.weight", "projector.2.bias", "projector.2.weight"]
# the old optimizer's groups (SGD, test_resnet, mlp projector, online probe): name, size
OLD_GROUPS = [("decay", 17), ("no_decay", 32), ("probe", 2)]
METHOD_SECTIONS = ("simclr", "byol", "mocov3", "simsiam")
MOVED = ("temperature", "projector", "projector_hidden_dim", "projector_dim")


def to_old_form(run: Path) -> None:
    """Rewrite the run's profile and checkpoint records as the code before per-method
    sections wrote them."""
    doc = tomlkit.parse((run / "profile.toml").read_text())
    for key in MOVED:
        doc["model"][key] = doc["simclr"][key]
    for section in METHOD_SECTIONS:
        doc.pop(section, None)
    (run / "profile.toml").write_text(tomlkit.dumps(doc))
    for ckpt in (run / "checkpoints").iterdir():
        meta = json.loads((ckpt / "state.json").read_text())
        meta["settings"] = {k.replace("simclr.", "model."): v
                            for k, v in meta["settings"].items()}
        (ckpt / "state.json").write_text(json.dumps(meta, indent=2))


def test_a_run_directory_of_the_previous_version_resumes(tmp_path, monkeypatch):
    import timm

    runs = tmp_path / "runs"
    monkeypatch.setenv("SSLTERM_FAULT_RAISE_AT_STEP", "4")  # dies in epoch 1, after a checkpoint
    sslterm("-o", str(runs), "run", str(SMOKE), "train.epochs=2", "probe.enabled=false",
            cwd=tmp_path)
    monkeypatch.delenv("SSLTERM_FAULT_RAISE_AT_STEP")
    run = only_run(runs)
    assert state(run) == "failed"
    (ckpt,) = (run / "checkpoints").iterdir()

    encoder = timm.create_model("test_resnet", num_classes=0)
    want = sorted([f"encoder.{k}" for k in encoder.state_dict()] + OLD_HEAD_KEYS)
    assert sorted(load_file(ckpt / "model.safetensors")) == want
    groups = torch.load(ckpt / "optimizer.bin", weights_only=True)["param_groups"]
    assert [(g["name"], len(g["params"])) for g in groups] == OLD_GROUPS

    to_old_form(run)
    # the old form's projector keys are still checked: a changed one is refused by name
    profile = (run / "profile.toml").read_text()
    (run / "profile.toml").write_text(profile.replace("projector_dim = 32", "projector_dim = 16"))
    sslterm("-o", str(runs), "resume", run.name, cwd=tmp_path)
    assert state(run) == "failed"
    failed = [e for e in events(run) if e["kind"] == "run_failed"][-1]
    assert "simclr.projector_dim: checkpoint" in failed["error"], failed["error"]

    (run / "profile.toml").write_text(profile)
    sslterm("-o", str(runs), "resume", run.name, cwd=tmp_path, check=True)
    assert state(run) == "finished"
    started = [e for e in events(run) if e["kind"] == "run_started"]
    assert started[-1]["resumed"] and started[-1]["start_step"] == 3
    results = json.loads((run / "results.json").read_text())
    assert results["final"]["ssl_train_loss"] is not None
    assert [e["epoch"] for e in results["history"]["epochs"]] == [0, 1]
