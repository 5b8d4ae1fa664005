"""Evaluation time and peak memory per rank: the all-gather evaluation against the sharded one.

    python benchmarks/bench_eval.py [--bank 50000] [--queries 5000] [--dim 512] [--k 200]

Two real processes in a gloo group on this CPU, one thread each (``accelerate launch``
sets OMP_NUM_THREADS=1), each holding its half of a synthetic feature bank and of the
queries, as the trainer's ranks do after extraction. Per method, a fresh pair of processes:

- ``all-gather`` (before): every rank all-gathers the bank and the queries (the trainer's
  old ``accelerator.gather``), rank 0 alone runs kNN on the whole bank while rank 1 waits;
  then every rank all-gathers the probe's training features.
- ``sharded`` (now): queries all-gathered, each rank scores them against its own shard, rank
  0 merges per chunk (:func:`sslterm.eval.sharded.sharded_knn_accuracy`); the probe's
  training features are gathered to rank 0 only (:func:`sslterm.eval.sharded.gather_to_main`).

Peak memory is the rise of the process's peak RSS over its RSS once its own shard exists.
Both methods must give the same accuracy; the script checks it.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslterm.eval.knn import knn_accuracy
from sslterm.eval.sharded import gather_to_main, sharded_knn_accuracy

WORLD = 2
CLASSES = 10


def shard_data(n: int, dim: int, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's half of n labelled, weakly clustered features (the same for any method)."""
    g = torch.Generator().manual_seed(seed * 100 + rank)
    per = n // WORLD
    labels = torch.randint(0, CLASSES, (per,), generator=g)
    means = torch.randn(CLASSES, dim, generator=torch.Generator().manual_seed(0)) * 2 / dim**0.5
    return means[labels] + torch.randn(per, dim, generator=g), labels


def all_gather(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def evaluate(method: str, bank, bank_labels, queries, query_labels, k: int):  # noqa: ANN001, ANN201
    rank = dist.get_rank()
    if method == "all-gather":
        full_bank, full_labels = all_gather(bank), all_gather(bank_labels)
        full_q, full_ql = all_gather(queries), all_gather(query_labels)
        acc = knn_accuracy(full_bank, full_labels, full_q, full_ql, CLASSES, k=k) if rank == 0 else None
        dist.barrier()
        probe_set = all_gather(bank)
        return acc, len(probe_set)
    full_q, full_ql = all_gather(queries), all_gather(query_labels)
    acc = sharded_knn_accuracy(bank, bank_labels, rank * len(bank), full_q, full_ql, CLASSES,
                               bank_size=WORLD * len(bank), k=k, temperature=0.1)
    probe_set = gather_to_main(bank)
    return acc, 0 if probe_set is None else len(probe_set)


def worker(rank: int, method: str, args: argparse.Namespace, out) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    bank, bank_labels = shard_data(args.bank, args.dim, rank, seed=1)
    queries, query_labels = shard_data(args.queries, args.dim, rank, seed=2)
    base = psutil.Process().memory_info().rss
    dist.barrier()
    start = time.perf_counter()
    acc, probe_rows = evaluate(method, bank, bank_labels, queries, query_labels, args.k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    out.put((method, rank, seconds, peak, acc, probe_rows))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--port", type=int, default=29517)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {WORLD} processes (gloo, 1 thread each), bank "
          f"{args.bank:,} x {args.dim}, {args.queries:,} queries, k={args.k}")
    ctx = mp.get_context("spawn")
    results = {}
    for method in ("all-gather", "sharded"):
        out = ctx.SimpleQueue()
        mp.start_processes(worker, args=(method, args, out), nprocs=WORLD, start_method="spawn")
        for _ in range(WORLD):
            m, rank, seconds, peak, acc, probe_rows = out.get()
            results[m, rank] = (seconds, peak, acc)
            print(f"{m:10s} rank {rank}: {seconds:7.2f} s, peak +{peak / 2**20:8.1f} MiB, "
                  f"probe features held {probe_rows:,} rows"
                  + (f", kNN top1 {acc['top1']:.2f}%" if acc else ""))
    assert results["all-gather", 0][2] == results["sharded", 0][2], "methods disagree"
    before, now = results["all-gather", 0][0], results["sharded", 0][0]
    print(f"rank 0 time sharded / all-gather: {now / before:.2f}")


if __name__ == "__main__":
    main()
