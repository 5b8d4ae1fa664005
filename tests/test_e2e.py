"""End to end through the real CLI, supervisor and `accelerate launch` child processes."""

from __future__ import annotations

import json
import re

import pytest
from fakedata import all_images
from runhelpers import SMOKE, events, only_run, sslterm, state, wait_for
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("smoke")
    out = sslterm("-o", str(tmp_path / "runs"), "run", str(SMOKE), cwd=tmp_path, check=True)
    return tmp_path, only_run(tmp_path / "runs"), out


@pytest.fixture(scope="module")
def exported(smoke):
    """The smoke run after ``sslterm features`` (once: the export does not change the run)."""
    tmp_path, run, _ = smoke
    sslterm("-o", str(tmp_path / "runs"), "features", run.name, cwd=tmp_path, check=True)
    return tmp_path, run


def test_smoke_run_leaves_a_complete_run_directory(smoke):
    tmp_path, run, out = smoke
    assert "finished" in out.stdout
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["exit_code"] == 0
    for name in ("profile.toml", "events.jsonl", "stdout.log", "results.json"):
        assert (run / name).is_file(), name
    kinds = [e["kind"] for e in events(run)]
    for kind in ("run_started", "step", "epoch", "val", "probe", "checkpoint", "run_finished"):
        assert kind in kinds, kind
    assert [e["epoch"] for e in events(run) if e["kind"] == "epoch"] == [0, 1, 2]
    assert [e["epoch"] for e in events(run) if e["kind"] == "probe"] == [0, 2]
    results = json.loads((run / "results.json").read_text())
    assert "NaN" not in (run / "results.json").read_text()
    assert 0 <= results["final"]["linear_eval"]["test_top1"] <= 100
    assert results["final"]["knn"]["val_top1"] is not None
    ckpts = sorted((run / "checkpoints").iterdir())
    assert ckpts and all((c / "COMPLETE").exists() for c in ckpts)
    assert results["checkpoint"] == f"checkpoints/{ckpts[-1].name}"

    weights = load_file(ckpts[-1] / "model.safetensors")
    assert any(k.startswith("encoder.") for k in weights)
    runs = sslterm("-o", str(tmp_path / "runs"), "runs", cwd=tmp_path, check=True)
    assert run.name in runs.stdout and "finished" in runs.stdout


def test_piped_progress_is_whole_lines(smoke):
    """Headless output into a pipe (a log file, a scheduler): whole lines, never cut or
    wrapped at the console width, and no progress bar."""
    out = smoke[2].stdout
    lines = out.splitlines()
    assert "…" not in out and "━" not in out  # rich's ellipsis of a cut line; its bar
    evaluation = next(line for line in lines if line.startswith("evaluation: kNN"))
    assert evaluation.rstrip().endswith("for it")  # one line, though longer than COLUMNS
    assert lines[-1].startswith("run ") and lines[-1].split()[2] == "finished:"


def test_stop_then_resume_continues_the_event_log(tmp_path):
    runs_dir = tmp_path / "runs"
    out = sslterm("-o", str(runs_dir), "run", str(SMOKE), "train.epochs=6", "probe.enabled=false",
                  "train.val_interval=0", "--detach", cwd=tmp_path, check=True)
    run_id = out.stdout.strip()
    run = runs_dir / run_id
    wait_for(lambda: any(e["kind"] == "epoch" and e["epoch"] >= 1 for e in events(run)),
             "epoch 1", run, timeout=180)
    sslterm("-o", str(runs_dir), "stop", run_id, "--wait", cwd=tmp_path, check=True)
    assert state(run) == "stopped"
    evs = events(run)
    assert evs[-1]["kind"] == "run_stopped"
    stopped_at, stopped_epoch = evs[-1]["step"], evs[-1]["epoch"]
    before = (run / "events.jsonl").read_bytes()
    resumed = sslterm("-o", str(runs_dir), "resume", run_id, cwd=tmp_path, check=True)
    assert state(run) == "finished"
    assert (run / "events.jsonl").read_bytes().startswith(before)  # appended, never rewritten
    # the foreground resume shows the new epochs once, not the history before the stop
    shown = [int(m) for m in re.findall(r"^epoch +(\d+) ", resumed.stdout, re.M)]
    assert "(resumed)" in resumed.stdout and shown == list(range(stopped_epoch, 6)), resumed.stdout
    # follow reads past the earlier launch's run_stopped to the run's real end
    followed = sslterm("-o", str(runs_dir), "follow", run_id, cwd=tmp_path, check=True)
    assert re.search(r"^epoch +5 ", followed.stdout, re.M) and "finished" in followed.stdout
    evs = events(run)
    epochs = [e["epoch"] for e in evs if e["kind"] == "epoch"]
    assert epochs == list(range(6)), epochs
    steps = [e["step"] for e in evs if e["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1)), steps  # no gap, no repeat
    starts = [e for e in evs if e["kind"] == "run_started"]
    assert [s["resumed"] for s in starts] == [False, True]
    assert starts[1]["start_step"] == stopped_at


def test_features_export_loads_into_timm_and_probe_reads_it(exported):
    import timm
    import torch

    from sslterm.data.augment import normalize
    from sslterm.data.registry import build_splits
    from sslterm.profile.load import load_profile

    tmp_path, run = exported
    meta = json.loads((run / "features" / "meta.json").read_text())
    assert meta["encoder"] == "test_resnet" and meta["checkpoint"].startswith("checkpoints/")
    feats = load_file(run / "features" / "features.safetensors")
    assert feats["test_features"].shape == (meta["splits"]["test"], meta["feature_dim"])

    model = timm.create_model("test_resnet", num_classes=0)
    model.load_state_dict(load_file(run / "features" / "encoder.safetensors"))
    model.eval()
    profile = load_profile(run / "profile.toml")
    splits = build_splits(profile.data, profile.train.seed)
    test = splits.tensors("test")
    with torch.inference_mode():
        again = model(normalize(all_images(test), meta["mean"], meta["std"]))
    assert torch.allclose(again, feats["test_features"], atol=1e-5)
    assert torch.equal(test.labels, feats["test_labels"])

    out = sslterm("-o", str(tmp_path / "runs"), "probe", run.name, "--set", "probe.epochs=5",
                  cwd=tmp_path, check=True)
    assert "linear probe (5 epochs" in out.stdout and "kNN" in out.stdout
    results = json.loads((run / "features" / "probe-results.json").read_text())
    assert 0 <= results["linear"]["test"]["top1"] <= 100


def test_probe_of_exported_features_repeats_the_runs_final_linear_eval(exported):
    """Same seed and probe settings as the run by default, so the same numbers."""
    tmp_path, run = exported
    meta = json.loads((run / "features" / "meta.json").read_text())
    assert meta["classes"] == ["0", "1", "2", "3"] and meta["seed"] == 42
    feats = load_file(run / "features" / "features.safetensors")
    for split in ("train", "val", "test"):
        assert len(meta["order"][split]["indices"]) == len(feats[f"{split}_labels"])
    assert sorted(meta["order"]["train"]["indices"] + meta["order"]["val"]["indices"]) == list(
        range(256))
    sslterm("-o", str(tmp_path / "runs"), "probe", run.name, cwd=tmp_path, check=True)
    offline = json.loads((run / "features" / "probe-results.json").read_text())["linear"]
    final = json.loads((run / "results.json").read_text())["final"]["linear_eval"]
    assert {f"{split}_{m}": offline[split][m] for split in ("train", "val", "test")
            for m in ("top1", "top5")} == {k: v for k, v in final.items() if k.endswith(("1", "5"))}


def test_cpu_dataloader_path(tmp_path):
    """The per-sample DataLoader path (large images, or data.augment = "cpu")."""
    sslterm("-o", str(tmp_path / "runs"), "run", str(SMOKE), "data.augment=cpu",
            "train.epochs=1", "probe.epochs=2", cwd=tmp_path, check=True)
    run = only_run(tmp_path / "runs")
    evs = events(run)
    assert next(e for e in evs if e["kind"] == "run_started")["augment"] == "cpu"
    val = next(e for e in evs if e["kind"] == "val")
    assert val["loss"] > 0 and 0 <= val["top1"] <= 100 and val["knn_top1"] is not None
    assert state(run) == "finished"
