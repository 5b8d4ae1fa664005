"""How long evaluation takes: linear probe and kNN on cached features vs feature extraction.

    python benchmarks/bench_probe.py [--threads N] [--extract-images 512]

(a) a 90-epoch linear probe on 50,000 x 512 learnable features at batch 4096 (the
original protocol), and kNN (k=200, T=0.1) of 10,000 queries against 50,000 features;
(b) images/s of extracting features with a timm resnet18 with the CIFAR stem (3x3
stride-1 conv1, no max-pool) on 32 px images. Both on this machine's CPU unless a GPU
is present and --device says so. The ratios show that once features are cached the
probe costs little next to extracting them.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
from torch import nn

from sslterm.eval.features import extract_features
from sslterm.eval.knn import knn_accuracy
from sslterm.eval.linear import train_linear_probe


def learnable_features(n: int, dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Non-negative (post-ReLU-like) features: weak class means buried in noise."""
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0)) * 0.15
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return (means[labels] + torch.randn(n, dim, generator=g)).relu(), labels


def cifar_resnet18() -> nn.Module:
    model = timm.create_model("resnet18", num_classes=0)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extract-images", type=int, default=512)
    parser.add_argument("--extract-batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}")

    train = learnable_features(50_000, 512, 10, seed=1)
    test = learnable_features(10_000, 512, 10, seed=2)
    start = time.perf_counter()
    probe = train_linear_probe(
        train,
        10,
        epochs=90,
        batch_size=4096,
        base_lr=0.1,
        weight_decay=0.0,
        momentum=0.9,
        evaluate={"test": test},
        device=device,
    )
    probe_s = time.perf_counter() - start
    print(
        f"linear probe  90 epochs, 50000 x 512, batch 4096: {probe_s:6.2f} s  "
        f"(train top1 {probe.metrics['train']['top1']:.1f}%, "
        f"test top1 {probe.metrics['test']['top1']:.1f}%)"
    )

    start = time.perf_counter()
    knn = knn_accuracy(train[0].to(device), train[1].to(device), *test, 10, k=200)
    knn_s = time.perf_counter() - start
    print(
        f"kNN           k=200, 10000 queries vs 50000:    {knn_s:6.2f} s  (top1 {knn['top1']:.1f}%)"
    )

    encoder = cifar_resnet18().to(device)
    size, batch = args.extract_images, args.extract_batch
    images = torch.randn(size, 3, 32, 32)
    batches = [
        (images[i : i + batch], torch.zeros(len(images[i : i + batch])))
        for i in range(0, size, batch)
    ]
    extract_features(encoder, batches[:1], device)  # warm-up
    start = time.perf_counter()
    extract_features(encoder, batches, device, channels_last=device.type == "cuda")
    extract_s = time.perf_counter() - start
    rate = size / extract_s
    extract_60k = 60_000 / rate
    print(f"extraction    resnet18 CIFAR stem, 32 px, batch {batch}: {rate:8.1f} images/s")
    print(f"  -> 60,000 images (CIFAR train+test) would take {extract_60k:8.1f} s")
    print(f"ratio probe / extraction of 60k images: {probe_s / extract_60k:.4f}")
    print(f"ratio kNN (10k queries) / extraction of 60k images: {knn_s / extract_60k:.4f}")


if __name__ == "__main__":
    main()
