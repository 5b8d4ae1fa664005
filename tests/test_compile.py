"""``train.compile``: the DDP-wrapped model is what is compiled (the momentum teacher
included), and its first steps equal eager ones within tolerance: on the CPU with inductor
here (a small encoder: inductor's C++ builds dominate the time), the real run on CUDA
(issue 23)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from runhelpers import SMOKE, events, only_run, sslterm, state
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sslterm.methods.registry import get_method
from sslterm.profile.load import load_profile
from sslterm.runs.launcher import free_port
from sslterm.train.engine import compiled


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    """A one-process gloo group, so the model can be DDP-wrapped in this process."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    torch._dynamo.reset()


def small_byol() -> nn.Module:
    """BYOL (a projector, a predictor and an EMA teacher) around a one-conv encoder."""
    encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return get_method("byol").create(encoder, 16, load_profile(SMOKE).byol)


def train_steps(model: nn.Module, compile_it: bool, steps: int = 3) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    ddp = DistributedDataParallel(model)
    forward = compiled(ddp) if compile_it else ddp
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        views = [torch.randn(8, 3, 16, 16, generator=gen) for _ in range(2)]
        model.set_progress(step, steps, steps)
        out = forward(views, None)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        model.after_step(step, steps)  # the teacher follows, eager, outside the graph
        losses.append(out["loss"].item())
    return losses


@pytest.mark.slow
def test_compiled_ddp_model_steps_like_eager_on_cpu_inductor(one_rank_group) -> None:
    torch.manual_seed(0)
    eager_model = small_byol()
    compiled_model = copy.deepcopy(eager_model)
    eager = train_steps(eager_model, compile_it=False)
    got = train_steps(compiled_model, compile_it=True)
    assert got == pytest.approx(eager, rel=1e-4, abs=1e-5)
    for a, b in zip(eager_model.state_dict().values(), compiled_model.state_dict().values(),
                    strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_run_steps_like_eager_on_cuda(tmp_path) -> None:
    quick = ["train.epochs=1", "train.max_steps_per_epoch=3", "train.val_interval=0",
             "probe.enabled=false", "model.method=byol"]
    losses = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        sslterm("-o", str(out), "run", str(SMOKE), *quick, f"train.compile={flag}", cwd=tmp_path)
        run = only_run(out)
        assert state(run) == "finished", (run / "stdout.log").read_text()[-3000:]
        losses[flag] = [e["loss"] for e in events(run) if e["kind"] == "step"]
    assert losses["true"] == pytest.approx(losses["false"], rel=2e-2)
