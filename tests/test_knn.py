"""kNN against a brute-force reference written independently (float64, per query, sorted)."""

from __future__ import annotations

import math

import pytest
import torch

from sslterm.eval.knn import (
    NonFiniteError,
    knn_accuracy,
    knn_predict,
    merge_neighbours,
    shard_neighbours,
    topk_accuracy,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_scores(train, labels, queries, num_classes, k, temperature):
    """Per query: rank all training samples by (-cosine, index), vote exp(sim/T), share."""
    train = [row / row.norm() for row in train.double()]
    out = []
    for q in queries.double():
        q = q / q.norm()
        sims = [float(q @ t) for t in train]
        order = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(labels[j])] += math.exp(sims[j] / temperature)
        total = sum(votes)
        out.append([v / total for v in votes])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 23, 1000])
def test_matches_brute_force_for_any_chunk_size(chunk_size):
    g = torch.Generator().manual_seed(0)
    train, queries = torch.randn(60, 8, generator=g), torch.randn(23, 8, generator=g)
    labels = torch.randint(0, 5, (60,), generator=g)
    got = knn_predict(train, labels, queries, 5, k=7, temperature=0.5, chunk_size=chunk_size)
    want = reference_scores(train, labels, queries, 5, 7, 0.5)
    assert got.shape == (23, 5)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_ties_at_the_cut_go_to_the_lowest_index(chunk_size):
    # Every 7th training vector matches the query exactly (sim 1, 29 of them); the other
    # 171 are orthogonal and tie at sim 0. k=50 takes 21 of the tied ones: the lowest
    # indices, whose labels differ from those of any other pick (torch.topk alone picks
    # arbitrary ones).
    n = 200
    train = torch.tensor([[1.0, 0.0] if i % 7 == 0 else [0.0, 1.0] for i in range(n)])
    labels = (torch.arange(n) // 20) % 10
    queries = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.5, 0.0]])
    got = knn_predict(train, labels, queries, 10, k=50, temperature=0.5, chunk_size=chunk_size)
    want = reference_scores(train, labels, queries, 10, 50, 0.5)
    torch.testing.assert_close(got.double(), want)


def test_k_larger_than_train_set_uses_every_sample():
    train, labels = torch.randn(6, 3), torch.tensor([0, 1, 1, 2, 2, 2])
    queries = torch.randn(4, 3)
    got = knn_predict(train, labels, queries, 4, k=200, temperature=1.0)
    torch.testing.assert_close(got.double(), reference_scores(train, labels, queries, 4, 6, 1.0))
    assert torch.all(got[:, 3] == 0)


def test_tiny_temperature_stays_finite():
    g = torch.Generator().manual_seed(1)
    train, labels = torch.randn(50, 6, generator=g), torch.randint(0, 3, (50,), generator=g)
    scores = knn_predict(train, labels, torch.randn(9, 6, generator=g), 3, k=10, temperature=1e-4)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores.sum(1), torch.ones(9))


def test_scale_of_features_does_not_matter():
    g = torch.Generator().manual_seed(2)
    train, labels = torch.randn(40, 5, generator=g), torch.randint(0, 4, (40,), generator=g)
    queries = torch.randn(10, 5, generator=g)
    a = knn_predict(train, labels, queries, 4, k=5)
    b = knn_predict(train * 7.0, labels, queries * 0.01, 4, k=5)
    torch.testing.assert_close(a, b)


def test_knn_accuracy_on_clusters():
    # Two well-separated classes: every query's neighbours share its label.
    g = torch.Generator().manual_seed(3)
    centers = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    labels = torch.randint(0, 2, (100,), generator=g)
    train = centers[labels] + torch.randn(100, 2, generator=g)
    q_labels = torch.randint(0, 2, (30,), generator=g)
    queries = centers[q_labels] + torch.randn(30, 2, generator=g)
    assert knn_accuracy(train, labels, queries, q_labels, 2, k=10) == {"top1": 100.0, "top5": 100.0}
    flipped = knn_accuracy(train, labels, queries, 1 - q_labels, 2, k=10)
    assert flipped["top1"] == 0.0


def test_topk_accuracy_counts_and_breaks_ties_by_class_index():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]])
    labels = torch.tensor([1, 1, 1])
    # Rows 1 and 2 tie classes 0 and 1; class 0 wins, so row 1 misses even top-2.
    acc = topk_accuracy(scores, labels, ks=(1, 2))
    assert acc == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3)}


def test_rejects_bad_inputs():
    train, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="dim"):
        knn_predict(train, labels, torch.randn(2, 4), 3)
    with pytest.raises(ValueError, match="labels"):
        knn_predict(train, labels, torch.randn(2, 3), 2)
    bad = train.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(NonFiniteError):
        knn_predict(bad, labels, torch.randn(2, 3), 3)


def sharded_scores(train, labels, queries, num_classes, k, temperature, shards):
    """What the engine does over ``shards`` processes: each scores its rows, one merges."""
    k = min(k, len(train))
    bounds = torch.linspace(0, len(train), shards + 1).round().long().tolist()
    bank = torch.nn.functional.normalize(train, dim=1)
    parts = [shard_neighbours(bank[a:b], labels[a:b], a, queries, k)
             for a, b in zip(bounds, bounds[1:], strict=False)]
    return merge_neighbours(parts, k, num_classes, temperature)


@pytest.mark.parametrize("shards", [1, 2, 3, 8, 70])
def test_sharded_knn_matches_brute_force(shards):
    g = torch.Generator().manual_seed(1)
    train, queries = torch.randn(60, 8, generator=g), torch.randn(23, 8, generator=g)
    labels = torch.randint(0, 5, (60,), generator=g)
    got = sharded_scores(train, labels, queries, 5, 7, 0.5, shards)
    torch.testing.assert_close(got.double(), reference_scores(train, labels, queries, 5, 7, 0.5),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_knn_breaks_ties_at_the_cut_like_one_bank(shards):
    n = 200
    train = torch.tensor([[1.0, 0.0] if i % 7 == 0 else [0.0, 1.0] for i in range(n)])
    labels = (torch.arange(n) // 20) % 10
    queries = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.5, 0.0]])
    got = sharded_scores(train, labels, queries, 10, 50, 0.5, shards)
    torch.testing.assert_close(got, knn_predict(train, labels, queries, 10, k=50, temperature=0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_knn_on_the_device_matches_the_cpu():
    g = torch.Generator().manual_seed(2)
    train, queries = torch.randn(5000, 64, generator=g), torch.randn(700, 64, generator=g)
    labels = torch.randint(0, 10, (5000,), generator=g)
    cpu = knn_predict(train, labels, queries, 10, k=20, temperature=0.1, chunk_size=256)
    dev = knn_predict(train.cuda(), labels.cuda(), queries.cuda(), 10, k=20, temperature=0.1,
                      chunk_size=256)
    torch.testing.assert_close(dev.cpu(), cpu, atol=1e-4, rtol=1e-4)
    sharded = sharded_scores(train.cuda(), labels.cuda(), queries.cuda(), 10, 20, 0.1, 4)
    torch.testing.assert_close(sharded.cpu(), cpu, atol=1e-4, rtol=1e-4)
