"""Evaluation at scale (issue 12 item 1): capped kNN bank and queries, the cost line at run
start, and the main-process-only gather."""

from __future__ import annotations

import json
import re

import pytest
import torch
from runhelpers import SMOKE, events, only_run, sslterm

from sslterm.eval.sharded import gather_to_main, sharded_knn_accuracy
from sslterm.profile.schema import ProbeConfig
from sslterm.train.evaluation import eval_cost, eval_rows


def test_eval_rows_is_all_or_a_fixed_sorted_subset() -> None:
    assert torch.equal(eval_rows(7, 0, 1), torch.arange(7))
    assert torch.equal(eval_rows(7, 9, 1), torch.arange(7))
    rows = eval_rows(1000, 50, 1)
    assert len(rows) == 50 == len(rows.unique())
    assert torch.equal(rows, rows.sort().values) and int(rows.max()) < 1000
    assert torch.equal(rows, eval_rows(1000, 50, 1))  # the same at every evaluation
    assert not torch.equal(rows, torch.arange(50))  # spread over the split, not its head


def test_eval_cost_names_the_capped_sizes() -> None:
    probe = ProbeConfig(knn_max_train=100_000, knn_max_queries=10_000)
    line = eval_cost(probe, 1_153_051, 128_116, 2048, 8)
    assert "kNN 10,000 queries x 100,000 bank x 2048-d = 4.1 TFLOP per validation" in line
    assert "97.7 MiB of bank per process" in line  # 12,500 x 2048 x 4 bytes
    assert "linear probe on 1,153,051 x 2048-d features (9008.2 MiB) on the main process" in line
    assert "wait up to 2 h" in line


def test_val_max_images_is_all_or_at_least_a_batch_of_two() -> None:
    assert ProbeConfig().val_max_images == 0 and ProbeConfig(val_max_images=2).val_max_images == 2
    with pytest.raises(ValueError, match="must be 0 \\(all\\) or at least 2"):
        ProbeConfig(val_max_images=1)


def test_without_a_process_group_nothing_is_sent() -> None:
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 4, generator=g), torch.randn(9, 4, generator=g)
    labels, query_labels = torch.arange(50) % 3, torch.arange(9) % 3
    assert gather_to_main(bank) is bank
    from sslterm.eval.knn import knn_accuracy

    want = knn_accuracy(bank, labels, queries, query_labels, 3, k=5, temperature=0.1)
    got = sharded_knn_accuracy(bank, labels, 0, queries, query_labels, 3, bank_size=50, k=5,
                               temperature=0.1, chunk_size=4)
    assert got == want


@pytest.mark.slow
def test_capped_knn_runs_on_the_capped_sets_and_says_its_cost(tmp_path) -> None:
    out_dir = tmp_path / "runs"
    sslterm("-o", str(out_dir), "run", str(SMOKE), "train.epochs=1", "probe.enabled=false",
            "probe.knn_max_train=100", "probe.knn_max_queries=10", cwd=tmp_path, check=True)
    run = only_run(out_dir)
    log = (run / "stdout.log").read_text()
    assert re.search(r"\[sslterm\] evaluation: kNN 10 queries x 100 bank x \d+-d", log), log
    knn = json.loads((run / "results.json").read_text())["final"]["knn"]["val_top1"]
    assert round(knn / 10, 6) == round(knn / 10)  # a score over exactly 10 queries
    assert any(e["kind"] == "log" and e["message"].startswith("evaluation:") for e in events(run))
