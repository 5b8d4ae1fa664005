"""The app driving real runs through the real launcher, supervisor and queue runner.

One long flow, as a user would do it: compose an invalid profile and see the
inline error, fix it, save (comments kept), launch, watch the chart gain
points, stop, see "stopped", resume, queue two short runs that start one after
another once the resumed run is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from tuihelpers import notices, wait_until

from sslterm.profile.edit import format_value, get_value
from sslterm.runs import queue
from sslterm.runs.store import iter_runs
from sslterm.tui.app import SSLTermApp
from sslterm.tui.screens.composer import ComposerScreen
from sslterm.tui.widgets.charts import MetricChart
from sslterm.tui.widgets.runs_table import RunsTable

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # runs are started from here; the supervisor must find the package even when
    # sslterm is not installed (running from a checkout)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    (tmp_path / "profiles").mkdir()
    shutil.copy(REPO / "profiles" / "smoke.toml", tmp_path / "profiles")
    yield tmp_path
    for run in iter_runs(tmp_path / "runs"):  # leave no process behind
        pgid = run.read_status().get("pgid")
        if pgid and run.is_locked():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    lock = tmp_path / "runs" / ".queue" / ".runner.lock"
    if lock.exists() and queue.runner_alive(tmp_path / "runs"):
        for item in queue.pending(tmp_path / "runs"):
            queue.remove(item)  # the runner exits once the queue is empty


def diagnose(app: SSLTermApp, step: str):
    """A failure message that says where the flow stopped and what the runs were doing."""

    def text() -> str:
        lines = [step]
        for summary in app.index.ordered():
            lines.append(f"  {summary.id}: {summary.state} step={summary.step} {summary.error}")
            try:
                tail = summary.run.stdout.read_text(errors="replace").splitlines()[-5:]
            except OSError:
                tail = []
            lines += [f"    | {line}" for line in tail]
        pending = [i.stem for i in queue.pending("runs")]
        lines.append(f"  queue: {pending} history: {queue.history('runs')}")
        return "\n".join(lines)

    return text


def status(table: RunsTable, run_id: str) -> str:
    return str(table.get_row(run_id)[2]) if run_id in [str(k.value) for k in table.rows] else ""


async def set_field(pilot, screen: ComposerScreen, key: str, text: str) -> None:
    """Type ``text`` into ``key``'s editor; returns once the document holds it."""
    editor = screen.query_one("#edit-input")
    screen.edit_field(key)
    await wait_until(pilot, lambda: screen.editor.spec.key == key and editor.has_focus)
    await pilot.press("end", "ctrl+u", *text, "enter")
    await wait_until(pilot, lambda: format_value(get_value(screen.doc, key)) == text)


async def test_compose_launch_watch_stop_resume_queue(workdir):
    profile = workdir / "profiles" / "smoke.toml"
    original = profile.read_text()
    app = SSLTermApp("runs", "profiles", poll_interval=0.25)
    async with app.run_test(size=(130, 40)) as pilot:
        # compose: an invalid value shows the CLI's line next to the field
        await pilot.press("2")
        await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
        composer = app.screen
        assert composer.open_path(Path("profiles/smoke.toml"))
        await set_field(pilot, composer, "train.epochs", "0")
        assert str(composer.error).startswith("profiles/smoke.toml:")
        assert composer.fields.error_key == "train.epochs"
        await pilot.press("ctrl+l")  # refused while invalid
        await wait_until(pilot, lambda: str(composer.error) in notices(app))
        assert not composer.launching
        # fix, save, launch
        await set_field(pilot, composer, "train.epochs", "40")
        assert composer.error is None
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not composer.dirty)
        saved = profile.read_text().splitlines()
        changed = [b for a, b in zip(original.splitlines(), saved, strict=True) if a != b]
        assert changed == ["epochs = 40"]  # one line changed; comments and layout kept
        await pilot.press("ctrl+l")
        await wait_until(
            pilot, lambda: app.current_mode == "runs", timeout=180, what=diagnose(app, "launch")
        )
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        run_id = table.selected
        assert run_id and run_id.startswith("smoke-")

        # watch: the loss chart gains points while the run trains
        chart = app.screen.query_one("#chart-loss", MetricChart)
        await wait_until(
            pilot, lambda: chart.points >= 2, timeout=240, what=diagnose(app, "first points")
        )
        first = chart.points
        await wait_until(
            pilot, lambda: chart.points > first, timeout=180, what=diagnose(app, "more points")
        )
        assert status(table, run_id) == "running"

        # stop: graceful, ends "stopped"
        await pilot.press("s")
        await wait_until(
            pilot, lambda: status(table, run_id) == "stopped", 180, diagnose(app, "stop")
        )
        steps_before = app.index.runs[run_id].step or 0

        # resume: the same directory trains on
        await pilot.press("r")
        await wait_until(
            pilot, lambda: status(table, run_id) == "running", 120, diagnose(app, "resume")
        )
        await wait_until(
            pilot,
            lambda: (app.index.runs[run_id].step or 0) > steps_before,
            240,
            diagnose(app, "resumed steps"),
        )

        # queue two short runs; they wait for the resumed run, then go one after another
        await pilot.press("2")
        await wait_until(pilot, lambda: app.current_mode == "composer")
        for key, value in (("train.epochs", "1"), ("train.max_steps_per_epoch", "1"),
                           ("train.val_interval", "0")):  # fmt: skip
            await set_field(pilot, composer, key, value)
        composer.edit_field("probe.enabled")
        await pilot.press("enter")  # the switch: off
        await wait_until(pilot, lambda: "enabled = false" in composer.text)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(queue.pending("runs")) == 1)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(queue.pending("runs")) == 2)
        await wait_until(pilot, lambda: queue.runner_alive("runs"), 60, diagnose(app, "runner"))
        await pilot.press("escape", "1")
        await wait_until(pilot, lambda: app.current_mode == "runs")
        table = app.screen.query_one(RunsTable)
        assert len(queue.pending("runs")) == 2  # still waiting: a run is active (see below)
        table.move_cursor(row=table.get_row_index(run_id))
        await pilot.press("s")
        await wait_until(
            pilot, lambda: status(table, run_id) == "stopped", 180, diagnose(app, "second stop")
        )

        def finished_others() -> list[str]:
            return [
                s.id for s in app.index.runs.values() if s.id != run_id and s.state == "finished"
            ]

        await wait_until(
            pilot, lambda: len(finished_others()) == 2, 400, diagnose(app, "queued runs")
        )
        taken = queue.history("runs")
        assert [h["run"] for h in taken] == sorted(finished_others())
        first_run, second_run = (
            json.loads((Path("runs") / r / "status.json").read_text())
            for r in sorted(finished_others())
        )
        assert first_run["ended"] <= second_run["started"]  # one after the other
        resumed = json.loads((Path("runs") / run_id / "status.json").read_text())
        assert resumed["ended"] <= first_run["started"]  # the queue waited for the active run
    assert not queue.pending("runs")
    deadline = time.monotonic() + 30
    while queue.runner_alive("runs") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not queue.runner_alive("runs")  # the runner leaves when the queue is empty
