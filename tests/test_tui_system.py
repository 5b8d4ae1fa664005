"""The system panel's sampler never fails without a GPU, and `sslterm serve` stays local."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import psutil
import pytest

from sslterm.tui import format as fmt
from sslterm.tui.serve import app_command
from sslterm.tui.system import SystemMonitor

REPO = Path(__file__).resolve().parents[1]


def test_sampler_without_nvml(monkeypatch):
    import pynvml

    def broken() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    s = SystemMonitor().sample()
    assert s.gpus == [] and s.gpu_note.startswith("no GPU")
    assert 0 <= s.cpu_percent <= 100 and 0 < s.ram_used <= s.ram_total


def test_sampler_with_a_gpu(monkeypatch):
    import pynvml

    class Mem:
        used, total = 30 << 30, 80 << 30

    class Util:
        gpu = 97

    for name, value in {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100",
        "nvmlDeviceGetMemoryInfo": lambda h: Mem,
        "nvmlDeviceGetUtilizationRates": lambda h: Util,
        "nvmlDeviceGetTemperature": lambda h, kind: 60 + h,
        "nvmlDeviceGetPowerUsage": lambda h: 400_000,
    }.items():
        monkeypatch.setattr(pynvml, name, value)
    s = SystemMonitor().sample()
    assert [(g.index, g.name, g.util, g.temperature, g.power_w) for g in s.gpus] == [
        (0, "NVIDIA H100", 97.0, 60, 400.0),
        (1, "NVIDIA H100", 97.0, 61, 400.0),
    ]


class NotSupported(Exception):
    """What pynvml raises (NVMLError_NotSupported) for readings a MIG slice lacks."""


def fake_nvml(**overrides):
    """An NVML module object: one H100 in MIG mode, where utilisation is not supported."""

    def not_supported(*_):
        raise NotSupported("Not Supported")

    calls = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(used=3 << 30, total=80 << 30),
        "nvmlDeviceGetUtilizationRates": not_supported,
        "nvmlDeviceGetTemperature": lambda h, kind: 41,
        "nvmlDeviceGetPowerUsage": lambda h: 90_000,
        "NVML_TEMPERATURE_GPU": 0,
    }
    calls.update({k: (not_supported if v is None else v) for k, v in overrides.items()})
    return types.SimpleNamespace(**calls)


def test_mig_gpu_without_utilisation_keeps_its_other_readings():
    (gpu,) = SystemMonitor(nvml=fake_nvml()).sample().gpus
    assert (gpu.name, gpu.util, gpu.mem_used, gpu.mem_total, gpu.temperature, gpu.power_w) == (
        "NVIDIA H100 80GB HBM3", None, 3 << 30, 80 << 30, 41, 90.0,
    )  # fmt: skip


def test_every_gpu_reading_is_optional_on_its_own():
    nvml = fake_nvml(nvmlDeviceGetMemoryInfo=None, nvmlDeviceGetTemperature=None,
                     nvmlDeviceGetPowerUsage=None, nvmlDeviceGetName=None)  # fmt: skip
    (gpu,) = SystemMonitor(nvml=nvml).sample().gpus
    assert (gpu.util, gpu.mem_used, gpu.mem_total, gpu.temperature, gpu.power_w) == (
        None, None, None, None, None,
    )  # fmt: skip
    assert gpu.name == "unknown GPU"


def test_format_helpers():
    assert [fmt.duration(s) for s in (None, 5, 125, 3 * 3600 + 7 * 60, 2 * 86400 + 4 * 3600)] == [
        "—", "5s", "2m05s", "3h07m", "2d04h",
    ]  # fmt: skip
    assert fmt.number(0.8163333) == "0.8163" and fmt.number(1e-6) == "1.000e-06"
    assert fmt.bar(0.5, 4) == "██░░" and fmt.size(1536) == "1.5 KiB"


def test_serve_command_is_quoted():
    cmd = app_command("my runs; rm -rf /", "profiles")
    assert "'my runs; rm -rf /'" in cmd and cmd.startswith(sys.executable)


def test_serve_listens_on_localhost_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from sslterm.tui.serve import serve; serve(port={port})"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("serve did not answer")
                time.sleep(0.2)
        assert b"sslterm" in page
        listening = [
            c.laddr for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"
        ]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def trainer_group():
    """A process group like a run's: a supervisor (new session) with a child that
    would compute on the GPU. Yields (pgid, child pid)."""
    proc = subprocess.Popen(["sh", "-c", "sleep 120 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (children := psutil.Process(proc.pid).children()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        yield proc.pid, children[0].pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_gpu_processes_name_the_runs_they_belong_to(trainer_group):
    from sslterm.tui.system import runs_on_gpu

    pgid, child = trainer_group
    assert runs_on_gpu((child, pgid), {pgid: "cifar10-20240501-120000"}) == [
        "cifar10-20240501-120000"
    ]
    assert runs_on_gpu((child,), {pgid + 1: "other"}) == []
    assert runs_on_gpu((2**22 + 12345,), {pgid: "x"}) == []  # no such process: skipped


def test_sampler_reads_the_processes_on_each_gpu():
    procs = [types.SimpleNamespace(pid=11, usedGpuMemory=1 << 30),
             types.SimpleNamespace(pid=12, usedGpuMemory=None)]  # fmt: skip
    (gpu,) = SystemMonitor(
        nvml=fake_nvml(nvmlDeviceGetComputeRunningProcesses=lambda h: procs)
    ).sample().gpus
    assert gpu.pids == (11, 12)
    (gpu,) = SystemMonitor(nvml=fake_nvml(nvmlDeviceGetComputeRunningProcesses=None)).sample().gpus
    assert gpu.pids == () and gpu.power_w == 90.0
