"""No host-device synchronisation in the training hot loop: the batched augmentation and a
DINO training step run under ``torch.cuda.set_sync_debug_mode("error")``, which turns every
synchronising call (a host copy of a device value, ``int()`` of a tensor, a boolean mask,
``torch.tensor(..., device="cuda")`` from host data) into an error. Skipped without a GPU;
benchmarks/gpu_session.sh runs them (``pytest -m cuda``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from methodhelpers import conv_encoder

from sslterm.data.augment import BatchAugment
from sslterm.data.views import View
from sslterm.methods.dino import DINO
from sslterm.profile.schema import AugmentConfig, DINOConfig
from sslterm.train.optim import build_optimizer, param_groups

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning"),
]

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
PLAN = (View(scale=(0.4, 1.0)),) * 2 + (View(size=16, scale=(0.05, 0.4)),) * 4
EVERYTHING = AugmentConfig(blur=True, rotation_p=0.5)  # every op of the batched path


@contextmanager
def no_sync() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_sync_debug_mode_catches_a_sync() -> None:
    """The negative control: the mode is on and does raise."""
    x = torch.ones(3, device="cuda")
    with no_sync(), pytest.raises(RuntimeError, match="synchroniz"):
        int(x.sum())


@pytest.mark.parametrize("crop", [True, False])
def test_batch_augment_does_not_sync(crop: bool) -> None:
    aug = BatchAugment(EVERYTHING.model_copy(update={"crop": crop}), 32, MEAN, STD, PLAN).cuda()
    x = torch.randint(0, 256, (64, 3, 40, 40), dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    aug(x, gen)  # warm-up: lazy CUDA/cuBLAS initialisation may synchronise once
    with no_sync():
        views = aug(x, gen)
    assert [v.shape[-1] for v in views] == [32, 32, 16, 16, 16, 16]


def test_batch_augment_of_a_padded_batch_does_not_sync() -> None:
    """The decode path's call: images of different sizes, sizes pinned on the host."""
    aug = BatchAugment(EVERYTHING, 32, MEAN, STD, PLAN).cuda()
    x = torch.randint(0, 256, (16, 3, 60, 50), dtype=torch.uint8, device="cuda")
    sizes = torch.tensor([[60 - i, 50 - 2 * i] for i in range(16)]).pin_memory()
    gen = torch.Generator(device="cuda").manual_seed(0)
    aug(x, gen, sizes)
    with no_sync():
        aug(x, gen, sizes)


def test_a_dino_training_step_does_not_sync() -> None:
    torch.manual_seed(0)
    cfg = DINOConfig(projector_hidden_dim=24, bottleneck_dim=12, output_dim=40, local_crops=4,
                     local_size=16, freeze_last_layer_epochs=0)
    method = DINO.create(conv_encoder(), 8, cfg).cuda().train()
    opt = build_optimizer("lars", param_groups(method, 1e-6), 0.1, momentum=0.9,
                          weight_decay=1e-6, trust_coefficient=1e-3, betas=(0.9, 0.999))
    aug = BatchAugment(EVERYTHING, 32, MEAN, STD, PLAN).cuda()
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)

    def step(n: int) -> torch.Tensor:
        method.set_progress(n, 10, 100)
        opt.zero_grad(set_to_none=True)
        loss = method.training_step(aug(x, gen))["loss"]
        loss.backward()
        opt.step()
        method.after_step(n, 100)
        return loss.detach()

    step(0)  # warm-up
    with no_sync():
        losses = [step(n) for n in (1, 2)]
    assert all(torch.isfinite(loss) for loss in losses)
