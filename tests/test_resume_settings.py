"""Settings a run is started or resumed with: what the trainer converts, what it refuses.

The fast tests drive the real Trainer in this process on the CPU; the slow one resumes
real `accelerate launch` runs with ``train.compile`` toggled both ways. The CUDA-only
cases (fused optimizers, fp16) are in test_cuda.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from runhelpers import SMOKE, events, only_run, sslterm, state

from sslterm.errors import UserError
from sslterm.profile.load import load_profile
from sslterm.runs.store import RunDir
from sslterm.train.engine import Position, Trainer, check_precision, match_param_layout

CUDA0 = torch.device("cuda", 0)


def fake_gpu(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    """A GPU that emulates bf16 without native support when ``native_bf16`` is False (a V100)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")


def test_bf16_on_a_gpu_without_native_bf16_is_refused_with_a_hint(monkeypatch):
    fake_gpu(monkeypatch, native_bf16=False)
    with pytest.raises(UserError) as err:
        check_precision("bf16", CUDA0)
    assert str(err.value) == ("train.precision: Tesla V100-SXM2-16GB (compute capability 7.0) "
                              "has no native bf16; use train.precision=fp16")
    check_precision("fp16", CUDA0)
    check_precision("no", CUDA0)
    check_precision("bf16", torch.device("cpu"))


def test_bf16_on_a_gpu_with_native_bf16_passes(monkeypatch):
    fake_gpu(monkeypatch, native_bf16=True)
    check_precision("bf16", CUDA0)


def trainer(run: RunDir, *overrides: str) -> Trainer:
    profile = load_profile(SMOKE, ["launch.cpu=true", "train.max_steps_per_epoch=1",
                                   "train.optimizer=sgd", *overrides])
    t = Trainer(run, profile)
    t.setup()
    return t


def test_resume_after_a_channels_last_toggle_puts_optimizer_state_in_the_new_layout(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    before = trainer(run, "train.channels_last=true")
    before.train_epoch(0, Position())
    before.save_checkpoint(Position(1, 0, 1), complete_epoch=True)
    after = trainer(run, "train.channels_last=false")
    assert after.maybe_resume()[1]
    moved = 0
    for param, buffers in after.opt.state.items():
        momentum = buffers["momentum_buffer"]
        assert momentum.stride() == param.stride()
        moved += param.dim() == 4
    assert moved  # the conv weights, whose layout channels_last changes


def test_resume_with_another_optimizer_is_refused_in_one_line_before_loading(tmp_path):
    """AdamW cannot continue from SGD's momentum buffers (it would fail at its first step)."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    before = trainer(run)
    before.train_epoch(0, Position())
    before.save_checkpoint(Position(1, 0, 1), complete_epoch=True)
    after = trainer(run, "train.optimizer=adamw")
    with pytest.raises(UserError) as err:
        after.maybe_resume()
    assert str(err.value) == ("train.optimizer: checkpoint step-000000001 was taken with 'sgd', "
                              "not 'adamw'; resume with train.optimizer=sgd or start a new run")
    assert not after.opt.state  # nothing was loaded
    assert trainer(run, "train.channels_last=false").maybe_resume()[1]  # converted, not refused


def test_match_param_layout_makes_a_fused_step_right_after_a_layout_change():
    """CPU fused SGD silently misapplies momentum kept in another layout (CUDA's refuses)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    saved = opt.state_dict()
    buffer = opt.state[conv.weight]["momentum_buffer"].clone()
    plain = torch.nn.Conv2d(3, 8, 3)
    plain.load_state_dict(conv.state_dict())
    fused = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, fused=True)
    fused.load_state_dict(saved)
    match_param_layout(fused)
    start = plain.weight.detach().clone()
    for p in plain.parameters():
        p.grad = torch.ones_like(p)
    fused.step()
    assert torch.allclose(plain.weight, start - 0.1 * (0.9 * buffer + 1))


def test_validation_views_fork_only_the_cpu_generator_on_a_multi_gpu_node(tmp_path, monkeypatch):
    """``fork_rng()`` without ``devices`` warns when a node has several GPUs (and forks them)."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    t = trainer(run, "data.augment=cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = [views[0] for views in t.val_views(torch.arange(8), 4)]
    again = [views[0] for views in t.val_views(torch.arange(8), 4)]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.slow
def test_resume_toggling_train_compile_both_ways(tmp_path, monkeypatch):
    """A checkpoint taken without compile resumes compiled, and the other way round (the
    compiled encoder's state dict keys must not change). Each leg ends by an injected fault
    one step after a checkpoint; the last leg finishes."""
    runs = tmp_path / "runs"
    quick = ["train.epochs=3", "train.val_interval=0", "probe.enabled=false",
             "train.max_steps_per_epoch=2"]
    monkeypatch.setenv("SSLTERM_FAULT_RAISE_AT_STEP", "3")  # the checkpoint at step 2 stays
    sslterm("-o", str(runs), "run", str(SMOKE), *quick, cwd=tmp_path)
    run = only_run(runs)
    assert state(run) == "failed"
    monkeypatch.setenv("SSLTERM_FAULT_RAISE_AT_STEP", "5")  # after the checkpoint at step 4
    sslterm("-o", str(runs), "resume", run.name, "--set", "train.compile=true", cwd=tmp_path,
            timeout=600)
    failed = [e for e in events(run) if e["kind"] == "run_failed"]
    assert len(failed) == 2 and "injected fault" in failed[-1]["error"], failed[-1]["error"]
    monkeypatch.delenv("SSLTERM_FAULT_RAISE_AT_STEP")
    sslterm("-o", str(runs), "resume", run.name, "--set", "train.compile=false", cwd=tmp_path,
            check=True)
    assert state(run) == "finished"
    starts = [e for e in events(run) if e["kind"] == "run_started"]
    assert [s["start_step"] for s in starts] == [0, 2, 4]
