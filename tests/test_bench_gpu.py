"""benchmarks/bench_gpu.py measures what ran, and each path starts with the memory of the
previous one freed. Run here on the CPU with the script's own code and a tiny image folder."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import signal

from fakedata import write_image_folder
from runhelpers import ROOT

from sslterm.train.engine import Trainer


def load_bench():  # noqa: ANN201 - the benchmark script as a module
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainers() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o) is Trainer}


def test_figures_divide_by_the_steps_that_ran_and_no_trainer_outlives_its_path(tmp_path):
    write_image_folder(tmp_path / "data", n_train=12, n_test=2, size=32)  # 36 images, 3 classes
    args = argparse.Namespace(
        data=tmp_path / "data", encoder="test_resnet", batch=8, steps=100, warmup=1, workers=0,
        precision="no", compile=False, device="cpu",
    )
    handler, earlier = signal.getsignal(signal.SIGTERM), trainers()
    result = load_bench().measure(args, "gpu")
    assert 0 < result["steps"] < 10  # an epoch of ~32 images at batch 8, not the 100 asked for
    assert result["ips"] == result["steps"] * 8 / result["seconds"]
    flops = result["flops_per_step"] * result["steps"] / result["seconds"] / 1e12
    assert result["achieved_tflops"] == flops
    assert signal.getsignal(signal.SIGTERM) is handler
    assert trainers() == earlier  # the path's Trainer (model, optimizer, data) is gone
