"""The precision policy: regions that claim float32 (losses, kNN, the linear probe) run
with autocast and TF32 off whatever the encoder uses (``train.tf32``), and give the
caller's settings back (issue 23)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslterm.eval import knn, linear
from sslterm.eval.precision import full_fp32
from sslterm.methods import losses


@pytest.fixture
def tf32_on():
    """The trainer's setting on CUDA with ``train.tf32``: TF32 allowed everywhere."""
    matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = conv


def test_full_fp32_turns_tf32_and_autocast_off_and_restores_them(tf32_on) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="inside"), full_fp32("cpu"):
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
            raise RuntimeError("inside")
        assert torch.is_autocast_enabled("cpu")
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32


def spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[str]:
    """Record the matmul precision each call of ``module.name`` runs under."""
    seen: list[str] = []
    original = getattr(module, name)

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.get_float32_matmul_precision())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return seen


def test_losses_knn_and_probe_run_without_tf32(tf32_on, monkeypatch) -> None:
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    in_loss = spy(monkeypatch, F, "normalize")
    losses.nt_xent(z1, z2, 0.1)
    assert in_loss and set(in_loss) == {"highest"}

    in_knn = spy(monkeypatch, knn, "_topk_lowest_index")
    knn.knn_predict(z1, torch.arange(8) % 2, z2, 2, k=3)
    assert in_knn == ["highest"]

    in_probe = spy(monkeypatch, linear.F, "linear")
    linear.train_linear_probe((z1, torch.arange(8) % 2), 2, epochs=1, batch_size=4,
                              base_lr=0.1, weight_decay=0.0, momentum=0.9)
    assert in_probe and set(in_probe) == {"highest"}
    assert torch.get_float32_matmul_precision() == "high"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nt_xent_is_float32_exact_with_tf32_on(tf32_on) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    z1 = torch.randn(256, 128, device="cuda", generator=gen)
    z2 = torch.randn(256, 128, device="cuda", generator=gen)
    got = losses.nt_xent(z1, z2, 0.1)[0]
    want = losses.nt_xent(z1.cpu(), z2.cpu(), 0.1)[0]  # a CPU has no TF32
    assert abs(got.item() - want.item()) < 1e-5 * abs(want.item())
