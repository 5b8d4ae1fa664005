"""The system panel: per-GPU load, memory, power and the runs computing on each GPU,
CPU and RAM, sampled every 2 s."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from sslterm.tui import format as fmt
from sslterm.tui.system import GpuSample, SystemSample, runs_on_gpu
from sslterm.tui.widgets.modebar import ModeBar


class SystemScreen(Screen):
    def __init__(self) -> None:
        super().__init__()
        self._busy = False

    def compose(self) -> ComposeResult:
        yield ModeBar("system")
        yield Static(id="gpu-note")
        yield DataTable(id="gpus", cursor_type="none")
        yield Static(id="host")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#gpus", DataTable).add_columns(
            "GPU", "name", "utilisation", "memory", "temp", "power", "runs"
        )
        self.set_interval(2.0, self.sample)
        self.sample()

    def sample(self) -> None:
        if self._busy or not self.is_current:
            return
        self._busy = True
        self._sample()

    @work(thread=True, group="system")
    def _sample(self) -> None:
        try:
            s = self.app.system_monitor.sample()
        finally:
            self._busy = False
        self.app.call_from_thread(self._show, s)

    def _show(self, s: SystemSample) -> None:
        table = self.query_one("#gpus", DataTable)
        table.clear()
        groups = {r.pgid: r.id for r in self.app.index.runs.values() if r.pgid and r.alive}
        for g in s.gpus:
            table.add_row(
                str(g.index),
                g.name,
                "—" if g.util is None else f"{fmt.bar(g.util / 100, 10)} {g.util:3.0f}%",
                _memory(g),
                "—" if g.temperature is None else f"{g.temperature}°C",
                "—" if g.power_w is None else f"{g.power_w:.0f} W",
                ", ".join(runs_on_gpu(g.pids, groups)) or "—",
            )
        table.display = bool(s.gpus)
        self.query_one("#gpu-note", Static).update(s.gpu_note)
        ram = s.ram_used / s.ram_total if s.ram_total else 0.0
        self.query_one("#host", Static).update(
            f"CPU  {fmt.bar(s.cpu_percent / 100)} {s.cpu_percent:5.1f}%  of {s.cpu_count} cores"
            f"  (load {s.load[0]:.2f} {s.load[1]:.2f} {s.load[2]:.2f})\n"
            f"RAM  {fmt.bar(ram)} {fmt.size(s.ram_used)} / {fmt.size(s.ram_total)}"
        )


def _memory(g: GpuSample) -> str:
    if g.mem_used is None or not g.mem_total:
        return "—"
    return f"{fmt.bar(g.mem_used / g.mem_total, 10)} {fmt.size(g.mem_used)} / {fmt.size(g.mem_total)}"
