"""Feature extraction: eval-mode forward of the frozen encoder, training flags restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslterm.eval.features import extract_features

pytestmark = pytest.mark.usefixtures("one_thread")


def small_encoder() -> nn.Module:
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    with torch.no_grad():  # non-trivial running stats, so eval and train mode differ
        encoder[1].running_mean.uniform_(-1, 1)
        encoder[1].running_var.uniform_(0.5, 2)
    return encoder


def batches(n=10, size=4):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 8, 8, generator=g)
    labels = torch.arange(n, dtype=torch.int32) % 3
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, n, size)]


def test_equals_direct_eval_forward_and_returns_cpu_float32_int64():
    encoder = small_encoder()
    data = batches()
    features, labels = extract_features(encoder, data, "cpu")
    encoder.eval()
    with torch.no_grad():
        direct = torch.cat([encoder(images) for images, _ in data])
    assert torch.equal(features, direct)
    assert features.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(labels, torch.cat([t for _, t in data]).long())
    assert not features.is_inference()  # usable for training and in-place edits


def test_restores_each_modules_training_flag_and_leaves_bn_stats_alone():
    encoder = small_encoder().train()
    encoder[1].eval()  # a caller-frozen BatchNorm must stay frozen
    stats = encoder[1].running_mean.clone()
    extract_features(encoder, batches(), "cpu")
    assert [m.training for m in encoder] == [True, False, True, True, True, True]
    assert encoder.training
    assert torch.equal(encoder[1].running_mean, stats)


def test_eval_encoder_stays_in_eval_mode():
    encoder = small_encoder().eval()
    extract_features(encoder, batches(), "cpu")
    assert not any(m.training for m in encoder.modules())


def test_restores_training_flag_when_the_forward_fails():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    encoder = nn.Sequential(nn.Identity(), Broken()).train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(encoder, batches(), "cpu")
    assert all(m.training for m in encoder.modules())


def test_channels_last_and_bf16_autocast_give_float32_features_close_to_fp32():
    encoder = small_encoder()
    data = batches()
    reference, _ = extract_features(encoder, data, "cpu")
    cl, _ = extract_features(encoder, data, "cpu", channels_last=True)
    torch.testing.assert_close(cl, reference)
    bf16, _ = extract_features(encoder, data, "cpu", autocast_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, reference, atol=0.05, rtol=0.05)
    assert not torch.equal(bf16, reference)  # autocast really ran


def test_rejects_unpooled_output_and_empty_input():
    with pytest.raises(ValueError, match="num_classes=0"):
        extract_features(nn.Conv2d(3, 4, 1), batches(), "cpu")
    with pytest.raises(ValueError, match="no batches"):
        extract_features(small_encoder(), [], "cpu")
