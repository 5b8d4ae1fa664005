"""Resume with changed settings where only CUDA shows the problem: fused optimizers refuse
state in another memory format, and fp16 needs a loss scaler a bf16 or fp32 checkpoint
lacks. Real `accelerate launch` runs on the GPU; skipped without one (benchmarks/
gpu_session.sh runs them: ``pytest -m cuda``)."""

from __future__ import annotations

import pytest
import torch
from runhelpers import SMOKE, events, only_run, sslterm, state

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

QUICK = ["train.epochs=2", "train.max_steps_per_epoch=2", "train.val_interval=0",
         "probe.enabled=false"]  # fmt: skip


def fail_after_first_checkpoint(tmp_path, monkeypatch, *settings: str):  # noqa: ANN201
    """A GPU run that checkpoints at step 2 and dies at step 3 (an injected fault)."""
    monkeypatch.setenv("SSLTERM_FAULT_RAISE_AT_STEP", "3")
    sslterm("-o", str(tmp_path / "runs"), "run", str(SMOKE), *QUICK, *settings, cwd=tmp_path)
    run = only_run(tmp_path / "runs")
    assert state(run) == "failed"
    started = next(e for e in events(run) if e["kind"] == "run_started")
    assert started["devices"][0] == torch.cuda.get_device_name(0)
    monkeypatch.delenv("SSLTERM_FAULT_RAISE_AT_STEP")
    return run


def resume(tmp_path, run, *settings: str) -> None:
    sets = [arg for s in settings for arg in ("--set", s)]
    out = sslterm("-o", str(tmp_path / "runs"), "resume", run.name, *sets, cwd=tmp_path)
    assert state(run) == "finished", out.stdout + (run / "stdout.log").read_text()[-3000:]
    starts = [e for e in events(run) if e["kind"] == "run_started"]
    assert [s["start_step"] for s in starts] == [0, 2]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fused_optimizer_resumes_after_a_channels_last_toggle(tmp_path, monkeypatch, optimizer):
    run = fail_after_first_checkpoint(tmp_path, monkeypatch, f"train.optimizer={optimizer}",
                                      "train.channels_last=true")
    resume(tmp_path, run, "train.channels_last=false")


def test_fp16_resume_of_a_bf16_checkpoint_starts_a_fresh_loss_scaler(tmp_path, monkeypatch):
    run = fail_after_first_checkpoint(tmp_path, monkeypatch, "train.precision=bf16")
    resume(tmp_path, run, "train.precision=fp16")
    assert "the loss scaler starts fresh" in (run / "stdout.log").read_text()
