"""Pilot tests of the app as a dashboard: the chart cursor, log-y, zoom, the metric
picker and chart pages, the run detail view, the method and ETA columns (fixed run
directories, no training processes)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from tuihelpers import SMOKE, T0, notices, screen_text, shows_its_view, wait_until, write_run

from sslterm.runs.summary import METRICS
from sslterm.tui.app import SSLTermApp
from sslterm.tui.screens.detail import DetailScreen
from sslterm.tui.screens.dialogs import MetricPicker
from sslterm.tui.screens.runs import CHART_IDS, chart_pages, page_of
from sslterm.tui.widgets.charts import WINDOWS, MetricChart, zoom
from sslterm.tui.widgets.runs_table import RunsTable

SIZE = (130, 40)
FINISHED = "cifar10-20240501-120000"
FAILED = "cifar10-20240501-150000"
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("utc")]


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "smoke.toml").write_text(SMOKE)
    (d / "cifar10.toml").write_text(
        'name = "cifar10"\n[data]\ndataset = "cifar10"\nnum_workers = 4\n'
        '[model]\nencoder = "resnet18"\n[train]\nepochs = 10\nbatch_size = 512\nbase_lr = 0.3\n'
    )
    return d


def make_app(runs_dir: Path, profiles_dir: Path) -> SSLTermApp:
    return SSLTermApp(runs_dir, profiles_dir, poll_interval=0.2, env_check_delay=None)


def charts(app) -> list[MetricChart]:
    return [app.screen.query_one(f"#{cid}", MetricChart) for cid in CHART_IDS]


def drawn(app) -> bool:
    """Every chart shows what it was last told to show."""
    return all(shows_its_view(c) for c in charts(app))


async def open_runs(pilot, run_id: str = "smoke-20240501-180000") -> None:
    """Wait for the table, highlight ``run_id`` and wait until its charts are drawn."""
    app = pilot.app
    table = app.screen.query_one(RunsTable)
    await wait_until(
        pilot, lambda: table.row_count == 3 and all(s.events for s in app.index.runs.values())
    )
    table.move_cursor(row=table.get_row_index(run_id), animate=False)
    await wait_until(pilot, lambda: all(c.draws and c.x_range for c in charts(app)[:1]))


# -- cursor, log-y, zoom -----------------------------------------------------------------
async def test_cursor_reads_exact_values_linked_across_charts(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_runs(pilot)
        summary = app.index.runs["smoke-20240501-180000"]
        await pilot.press("tab")
        assert app.focused is charts(app)[0]
        await pilot.press("left")  # the cursor starts at the right end, then moves left
        await wait_until(pilot, lambda: app.screen.cursor is not None)
        for _ in range(8):  # a held key: eight steps before the screen hands the cursor back
            charts(app)[0].action_cursor(-1)
        await wait_until(pilot, lambda: drawn(app) and all(c.readout for c in charts(app)))
        x = app.screen.cursor
        lo, hi = charts(app)[0].x_range
        step = (hi - lo) / max(1, charts(app)[0].size.width - 12)
        assert x == pytest.approx(hi - 8 * step)  # no step lost
        assert 1 < x < 16
        assert {c.cursor for c in charts(app)} == {x}  # one cursor on every chart
        expect = {
            "train": summary.series["loss"].value_at("step", x),
            "val": summary.series["val_loss"].value_at("step", x),
            "learning rate": summary.series["lr"].value_at("step", x),
            "images/s": summary.series["ips"].value_at("step", x),
            "kNN": summary.series["knn"].value_at("step", x),
        }
        got = {k: v for c in charts(app) for k, v in c.readout}
        assert {k: got[k] for k in expect} == expect
        assert got["linear"] is None  # no linear eval yet at this step
        # the exact values are on screen, in each chart's title
        await wait_until(pilot, lambda: f"train {expect['train']:.4g}" in screen_text(app))
        assert f"▸ step {x:.6g}" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.cursor is None)
        assert isinstance(app.focused, RunsTable)
        await wait_until(pilot, lambda: not any(c.readout for c in charts(app)))


async def test_log_y_is_per_chart(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_runs(pilot)
        loss, lr, *_ = charts(app)
        await pilot.press("tab", "y")
        assert loss.log_y and not lr.log_y
        await wait_until(pilot, lambda: "loss (log)" in screen_text(app))
        assert "learning rate (log)" not in screen_text(app)
        await wait_until(pilot, lambda: loss.plotted and max(loss.plotted[0][2]) < 1)  # log10
        await pilot.press("tab", "y")
        assert lr.log_y and loss.log_y
        await pilot.press("shift+tab", "y")
        assert not loss.log_y and lr.log_y


async def test_zoom_shows_the_last_part_of_every_chart(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_runs(pilot, FINISHED)  # 200 steps
        loss = charts(app)[0]
        await wait_until(pilot, lambda: loss.x_range == (1.0, 200.0))
        await pilot.press("z")
        assert app.screen.window == WINDOWS[1]
        # each chart replots on its own tick: wait for all of them, not the first
        await wait_until(pilot, lambda: drawn(app))
        assert loss.x_range is not None and loss.x_range[0] >= 100
        assert loss.x_range[1] == 200.0
        assert all(c.x_range is None or c.x_range[0] >= 100 for c in charts(app))
        assert len({c._lo() for c in charts(app)}) == 1  # one stretch on every chart
        await wait_until(pilot, lambda: "last 50%" in screen_text(app))
        await pilot.press("z", "z", "z", "z", "z")  # stops at the closest
        assert app.screen.window == WINDOWS[-1]
        await pilot.press("Z", "Z", "Z", "Z", "Z", "Z")
        assert app.screen.window == 1.0
        await wait_until(pilot, lambda: loss.x_range == (1.0, 200.0))


def test_zoom_steps_and_clamps():
    assert zoom(1.0, 1) == 0.5 and zoom(1.0, -1) == 1.0 and zoom(WINDOWS[-1], 1) == WINDOWS[-1]


# -- many metrics ------------------------------------------------------------------------
def test_pages_chart_every_series_after_the_fixed_four():
    names = [*METRICS, "momentum", "val_top1", "val_top5", "epoch_loss", "epoch_online_top1"]
    pages = chart_pages(names)
    assert len(pages) == 3
    assert [t for t, _ in pages[1]] == ["momentum", "val_top1", "val_top5", "epoch_loss"]
    assert pages[2] == (("epoch_online_top1", (("epoch_online_top1", ""),)),)
    assert page_of(pages, "momentum") == 1 and page_of(pages, "lr") == 0


async def test_metric_picker_charts_a_methods_own_scalar(tmp_path, profiles_dir, monkeypatch):
    """BYOL logs momentum on every step: the picker lists it and charts it."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    run = write_run(
        runs, "byol-20240501-120000", state="finished", start=T0, epochs=2, done_epochs=2
    )
    log = run / "events.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    for e in lines:
        if e["kind"] == "step":
            e["momentum"] = round(0.99 + 0.01 * e["step"] / 40, 6)
        if e["kind"] == "run_started":
            e["method"] = "byol"
    log.write_text("".join(json.dumps(e) + "\n" for e in lines))
    app = make_app(runs, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 1 and app.index.runs[run.name].events)
        assert "byol" in [str(c) for c in table.get_row(run.name)]
        await pilot.press("m")
        await wait_until(pilot, lambda: isinstance(app.screen, MetricPicker))
        picker = app.screen
        assert "momentum" in [c[0] for c in picker.choices]
        assert {"val_top1", "val_top5", "epoch_loss"} <= {c[0] for c in picker.choices}
        options = picker.query_one("#metrics")
        options.highlighted = [c[0] for c in picker.choices].index("momentum")
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, MetricPicker))
        chart = next(c for c in charts(app) if c.title == "momentum")
        assert app.focused is chart
        # the chart held page 1's metric a tick ago: wait for its replot with momentum
        await wait_until(pilot, lambda: shows_its_view(chart) and chart.points > 0)
        assert chart.plotted[0][0] == "momentum"
        assert max(chart.plotted[0][2]) == pytest.approx(1.0)
        assert "charts 2/" in screen_text(app)
        await pilot.press("f")  # the focused chart, as a figure
        out = tmp_path / "figures" / f"momentum-{run.name}.svg"  # named with its full path
        await wait_until(pilot, lambda: f"saved {out}" in notices(app), timeout=60)
        assert out.is_file()
        await pilot.press("escape", "p")  # back to the first page
        assert app.screen.page == 0
        await wait_until(pilot, lambda: charts(app)[0].title == "loss")


# -- run detail --------------------------------------------------------------------------
async def test_detail_view_of_a_finished_run(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=(220, 60)) as pilot:
        await open_runs(pilot, FINISHED)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await wait_until(pilot, lambda: app.screen.details is not None)
        text = screen_text(app)
        assert "host gpu-node-7 · world size 1 · devices NVIDIA H100" in text
        # the reproduce line holds a tmp path: read on the widget, wherever it wraps
        where = str(app.screen.query_one("#detail-where").render())
        assert f"reproduce: sslterm run {runs_dir / FINISHED / 'profile.toml'}" in where
        assert "final results (from checkpoints/epoch-0009-step-000200)" in text
        assert re.search(r"linear_eval\s+test_top1\s+85\b", text)
        assert re.search(r"knn\s+val_top1\s+80\.5", text)
        assert re.search(r"online_probe\s+train_top1\s+61\.25", text)
        assert "epoch-0009-step-000200  3.0 MiB  ← final results" in text
        assert "features.safetensors  1.5 MiB" in text
        # marked: the keys whose value is not what profiles/cifar10.toml gives; none here:
        # the old layout's model.temperature holds [simclr]'s default, which the source
        # does not set
        assert "(● 0 keys differ from " in text
        assert "● model.temperature" not in text and "  model.temperature = 0.1" in text
        assert "● train.base_lr" not in text and "  train.base_lr = 0.3" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, DetailScreen))


async def test_detail_view_of_a_failed_run_shows_its_error(runs_dir, profiles_dir):
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_runs(pilot, FAILED)
        await pilot.press("enter")
        await wait_until(pilot, lambda: getattr(app.screen, "details", None) is not None)
        text = screen_text(app)
        assert "error: rank 0: RuntimeError: CUDA out of memory" in text
        assert "engine.py" in text
        assert "final results: none (no results.json)" in text


# -- time --------------------------------------------------------------------------------
async def test_a_live_run_shows_its_eta(tmp_path, profiles_dir):
    runs = tmp_path / "runs"
    spe, done = 20, 5  # 100 of 200 steps done, one step every 3 s
    run = write_run(runs, "live-20240501-120000", state="running", start=time.time() - done * spe * 3,
                    done_epochs=done, spe=spe, host="gpu-node-elsewhere")  # fmt: skip
    app = make_app(runs, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 1 and app.index.runs[run.name].events)
        eta = str(table.get_cell(run.name, "eta"))
        assert re.fullmatch(r"[45]m\d\ds", eta), eta  # 300 s of work left, less the time since


# -- compare -----------------------------------------------------------------------------
async def test_compare_shows_method_and_final_results_by_protocol(runs_dir, profiles_dir):
    from textual.widgets import DataTable

    from sslterm.tui.screens.compare import CompareScreen

    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_runs(pilot, FAILED)
        await pilot.press("space", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        table = app.screen.query_one("#results", DataTable)
        await wait_until(pilot, lambda: table.row_count > 1)
        rows = {str(k.value): [str(c) for c in table.get_row(k)] for k in table.rows}
        assert rows["method"] == ["method", "simclr", "simclr"]
        assert rows["linear_eval test_top1"] == ["linear_eval test_top1", "—", "85"]
        assert rows["knn val_top1"] == ["knn val_top1", "—", "80.5"]
        assert rows["online_probe train_top1"][2] == "61.25"
        # every series the runs log can be overlaid, not only the fixed ones
        seen = set()
        for _ in range(20):
            await pilot.press("m")
            seen.add(app.screen.metric)
        assert {"loss", "linear", "val_top1", "epoch_seconds"} <= seen


async def test_system_panel_shows_which_run_uses_which_gpu(tmp_path, profiles_dir):
    """A live run's trainer process computes on GPU 1: that row names the run."""
    import subprocess

    import psutil
    from textual.widgets import DataTable

    from sslterm.tui.system import GpuSample, SystemSample

    proc = subprocess.Popen(["sh", "-c", "sleep 120 & wait"], start_new_session=True)
    try:
        await_child = time.monotonic() + 30
        while not (children := psutil.Process(proc.pid).children()):
            assert time.monotonic() < await_child
            time.sleep(0.05)
        runs = tmp_path / "runs"
        run = write_run(runs, "live-20240501-120000", state="running", start=T0,
                        done_epochs=1, host="gpu-node-elsewhere")  # fmt: skip
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps({**status, "pgid": proc.pid}))

        class Monitor:
            def sample(self) -> SystemSample:
                gpus = [GpuSample(0, "NVIDIA H100", 0.0, 1 << 30, 80 << 30, 30, 70.0),
                        GpuSample(1, "NVIDIA H100", 97.0, 60 << 30, 80 << 30, 71, 650.0,
                                  (children[0].pid,))]  # fmt: skip
                return SystemSample(10.0, 16, 1 << 30, 8 << 30, (1.0, 1.0, 1.0), gpus, "")

        app = SSLTermApp(runs, profiles_dir, poll_interval=0.2, system_monitor=Monitor(),
                         env_check_delay=None)  # fmt: skip
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.index.runs.get(run.name) is not None
                             and app.index.runs[run.name].pgid == proc.pid)  # fmt: skip
            await pilot.press("5")
            await wait_until(pilot, lambda: app.current_mode == "system")
            table = app.screen.query_one("#gpus", DataTable)
            await wait_until(pilot, lambda: table.row_count == 2)
            cells = [[str(c) for c in table.get_row_at(i)] for i in range(2)]
            assert cells[0][-1] == "—" and cells[1][-1] == run.name
            assert cells[1][5] == "650 W" and "60.0 GiB / 80.0 GiB" in cells[1][3]
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


async def test_f_saves_the_compared_chart_as_a_figure(
    runs_dir, profiles_dir, tmp_path, monkeypatch
):
    from sslterm.tui.screens.compare import CompareScreen

    monkeypatch.chdir(tmp_path)
    app = make_app(runs_dir, profiles_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_runs(pilot, FAILED)
        await pilot.press("space", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        await wait_until(pilot, lambda: len(app.screen.picked) == 2)
        await pilot.press("f")
        out = tmp_path / "figures" / f"loss-{FAILED}+1.svg"
        await wait_until(pilot, lambda: f"saved {out}" in notices(app), timeout=60)
    svg = out.read_text()
    assert FAILED in svg and FINISHED in svg  # both runs in the legend, as text


async def test_a_short_terminal_pages_two_charts_at_a_time(tmp_path, profiles_dir):
    """In one row of charts only two show, so the extra pages hold two metrics each."""
    runs = tmp_path / "runs"
    run = write_run(
        runs, "short-20240501-120000", state="finished", start=T0, epochs=2, done_epochs=2
    )
    app = make_app(runs, profiles_dir)
    async with app.run_test(size=(100, 18)) as pilot:
        await wait_until(
            pilot, lambda: app.index.runs.get(run.name) and app.index.runs[run.name].events
        )
        grid = app.screen.query_one("#charts")
        await wait_until(pilot, lambda: grid.has_class("-one-row"))
        await pilot.press("n")
        shown = [c for c in charts(app) if c.display and not c.has_class("-unused")]
        await wait_until(pilot, lambda: all(c.region.width for c in shown))
        assert [c.title for c in shown] == ["epoch_loss", "epoch_lr"]
        assert all(c.region.height > 0 for c in shown)
