"""Machine load for the system panel: per-GPU through NVML, CPU and RAM through psutil.

UI-free. NVML is optional: without a driver or a GPU the sampler reports no GPUs
and says why, never raises. Every per-GPU reading is optional on its own: under MIG
NVML answers NotSupported for utilisation (and may for others), which leaves that
field empty, not the whole GPU unavailable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    util: float | None
    mem_used: int | None
    mem_total: int | None
    temperature: int | None = None
    power_w: float | None = None
    pids: tuple[int, ...] = ()
    """Processes computing on this GPU (empty where NVML does not say, e.g. in a container)."""


def _optional(read: Callable[[], T]) -> T | None:
    """One NVML reading, or None where this GPU (a MIG slice, an old board) has none."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and kin: leave the field empty
        return None


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float
    cpu_count: int
    ram_used: int
    ram_total: int
    load: tuple[float, float, float]
    gpus: list[GpuSample] = field(default_factory=list)
    gpu_note: str = ""


class SystemMonitor:
    """Samples on demand; NVML is initialised once, on the first sample."""

    def __init__(self, nvml: Any = None) -> None:
        """``nvml``: the NVML module to use (default: pynvml, imported on first sample)."""
        self._module = nvml
        self._nvml: Any = None
        self._note = ""
        self._tried = False
        psutil.cpu_percent(interval=None)  # prime: the next call measures from here

    def _init_nvml(self) -> None:
        self._tried = True
        try:
            nvml = self._module
            if nvml is None:
                import pynvml as nvml
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - any NVML failure means "no GPU here"
            self._note = f"no GPU ({type(exc).__name__}: {exc})".strip()
            return
        self._nvml = nvml

    def gpus(self) -> list[GpuSample]:
        if not self._tried:
            self._init_nvml()
        nv = self._nvml
        if nv is None:
            return []
        out = []
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001
            self._note = f"NVML: {exc}"
            return []
        for i in range(count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:  # noqa: BLE001 - a lost GPU is shown, not raised
                out.append(GpuSample(i, f"unavailable: {exc}", None, None, None))
                continue
            out.append(_gpu_sample(nv, i, h))
        if not out and not self._note:
            self._note = "no GPU (NVML found none)"
        return out

    def sample(self) -> SystemSample:
        vm = psutil.virtual_memory()
        try:
            load = psutil.getloadavg()
        except (AttributeError, OSError):
            load = (0.0, 0.0, 0.0)
        gpus = self.gpus()
        return SystemSample(
            cpu_percent=psutil.cpu_percent(interval=None),
            cpu_count=psutil.cpu_count() or 1,
            ram_used=int(vm.total - vm.available),
            ram_total=int(vm.total),
            load=tuple(load),  # type: ignore[arg-type]
            gpus=gpus,
            gpu_note="" if gpus else self._note,
        )

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def _gpu_sample(nv: Any, index: int, h: Any) -> GpuSample:
    """Whatever this GPU reports; each missing reading is None."""
    name = _optional(lambda: nv.nvmlDeviceGetName(h))
    mem = _optional(lambda: nv.nvmlDeviceGetMemoryInfo(h))
    util = _optional(lambda: float(nv.nvmlDeviceGetUtilizationRates(h).gpu))
    power = _optional(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
    return GpuSample(
        index,
        name.decode() if isinstance(name, bytes) else str(name or "unknown GPU"),
        util,
        None if mem is None else int(mem.used),
        None if mem is None else int(mem.total),
        _optional(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        power,
        tuple(p.pid for p in _optional(lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)) or ()),
    )


def runs_on_gpu(
    pids: tuple[int, ...],
    groups: Mapping[int, str],
    getpgid: Callable[[int], int] = os.getpgid,
) -> list[str]:
    """The runs whose processes compute on a GPU: a run's trainer processes share its
    supervisor's process group (``status.json``'s ``pgid``), given here as pgid -> run id."""
    out: list[str] = []
    for pid in pids:
        try:
            run = groups.get(getpgid(pid))
        except OSError:  # ended, or another PID namespace
            continue
        if run is not None and run not in out:
            out.append(run)
    return out
