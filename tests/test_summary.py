"""Pure series code (EMA, downsampling) and the incremental run summary."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest

from sslterm.runs import summary as sm
from sslterm.runs.events import EventReader
from sslterm.runs.store import RunDir
from sslterm.runs.summary import (
    RunIndex,
    RunSummary,
    Series,
    downsample,
    ema,
    final_accuracies,
    minmax_indices,
)


def write_status(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    status = {"state": "finished", "profile": "p", "started": "2024-05-01T12:00:00+00:00"}
    status.update(fields)
    (run / "status.json").write_text(json.dumps(status))


def event(kind: str, t: float, **fields) -> str:
    return json.dumps({"v": 1, "kind": kind, "t": t, **fields}, separators=(",", ":")) + "\n"


def step_lines(n: int, start: int = 1, spe: int = 10, t0: float = 1000.0) -> str:
    return "".join(
        event("step", t0 + i, epoch=(i - 1) // spe, step=i, loss=10.0 / i, lr=0.1, ips=100.0)
        for i in range(start, start + n)
    )


# -- ema -----------------------------------------------------------------------------
def test_ema_basic_and_missing_values():
    assert ema([]) == []
    out = ema([None, 1.0, float("nan"), 3.0], weight=0.5)
    assert math.isnan(out[0])
    assert out[1:] == [1.0, 1.0, 2.0]


def test_ema_counts_match_repeated_points():
    # one point standing for 3 equals three identical points
    assert ema([0.0, 3.0], weight=0.5, counts=[1, 3])[-1] == pytest.approx(
        ema([0.0, 3.0, 3.0, 3.0], weight=0.5)[-1]
    )


def test_series_ema_matches_pure_function():
    s = Series(weight=0.8)
    vals = [5.0, 4.0, None, 3.5, 1.0]
    for i, v in enumerate(vals):
        s.append(i, i / 10, i * 2.0, v)
    expected = ema(vals, weight=0.8)
    assert list(s.smooth) == pytest.approx(expected)
    xs, ys = s.points("time", smoothing=0.0)
    assert xs == [0.0, 2.0, 6.0, 8.0]  # the missing value is not drawn
    assert ys == [5.0, 4.0, 3.5, 1.0]


def test_other_ema_weights_match_the_pure_function_as_points_arrive():
    s = Series(weight=0.8)
    vals = [5.0, 4.0, None, 3.5, 1.0, 7.0, None, 2.0]
    for i, v in enumerate(vals[:4]):
        s.append(i, i, i, v)
    assert list(s.smoothed(0.5)) == pytest.approx(ema(vals[:4], weight=0.5), nan_ok=True)
    for i, v in enumerate(vals[4:], 4):
        s.append(i, i, i, v)  # extended from where it was read, not recomputed
    assert list(s.smoothed(0.5)) == pytest.approx(ema(vals, weight=0.5), nan_ok=True)
    assert list(s.smoothed(0.99)) == pytest.approx(ema(vals, weight=0.99), nan_ok=True)
    assert s.smoothed(0.8) is s.smooth
    _, ys = s.points("step", smoothing=0.5)
    assert ys == pytest.approx([v for v in ema(vals, weight=0.5) if v == v])


# -- downsampling ----------------------------------------------------------------------
def test_downsample_small_series_unchanged():
    assert downsample([1, 2, 3], [3, 1, 2], 10) == ([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])


def test_downsample_keeps_spikes_and_ends():
    n = 10_000
    xs = list(range(n))
    ys = [1.0] * n
    ys[1234] = 50.0
    ys[7777] = -3.0
    dx, dy = downsample(xs, ys, 40)
    assert len(dx) <= 2 * 40 + 2
    assert dx[0] == 0 and dx[-1] == n - 1
    assert 50.0 in dy and -3.0 in dy
    assert dx == sorted(dx)


def test_downsample_drops_non_finite_and_respects_x_range():
    xs = [0, 1, 2, 3, 100, 101]  # uneven x: buckets are equal x-ranges, not equal counts
    ys = [1, float("nan"), 2, 3, 4, 5]
    idx = minmax_indices(xs, ys, 1)
    assert 1 not in idx.tolist()
    dx, dy = downsample(xs, ys, 1)
    assert min(dy) == 1 and max(dy) == 5


def test_series_thins_but_keeps_spike(monkeypatch):
    monkeypatch.setattr(sm, "MAX_POINTS", 1000)
    s = Series()
    for i in range(1500):
        s.append(i, 0, i, 99.0 if i == 10 else 1.0)
    assert len(s) < 1000
    assert 99.0 in s.value
    assert list(s.step) == sorted(s.step)
    assert s.step[-1] == 1499


# -- run summary -----------------------------------------------------------------------
def test_summary_reads_incrementally_and_ignores_torn_line(tmp_path):
    run = tmp_path / "r1"
    write_status(run, state="finished", ended="2024-05-01T12:10:00+00:00")
    log = run / "events.jsonl"
    log.write_text(
        event("run_started", 1000.0, epochs=3, steps_per_epoch=10, profile="p") + step_lines(5)
    )
    s = RunSummary(RunDir(run))
    assert s.update()
    # epoch: epochs complete (steps 1-5 are inside epoch 0, none is done yet)
    assert (s.epoch, s.epochs, s.step, s.last_loss) == (0, 3, 5, 2.0)
    assert not s.update()  # nothing new
    with open(log, "a") as fh:
        fh.write(step_lines(10, start=6))
        fh.write(event("val", 1016.0, epoch=1, step=15, loss=3.0, knn_top1=41.5))
        fh.write(event("checkpoint", 1016.5, epoch=2, step=15, path="c", complete_epoch=True))
        fh.write(event("probe", 1017.0, epoch=1, step=15, val_top1=55.0)[:-10])  # torn
    assert s.update()
    assert (s.epoch, s.step, s.knn, s.linear) == (2, 15, 41.5, None)
    assert len(s.series["loss"]) == 15
    assert s.series["loss"].epoch[-1] == pytest.approx(1.5)
    assert s.duration() == 16.5  # training time from the log: run_started to its last event


def test_summary_restarts_when_log_replaced(tmp_path):
    run = tmp_path / "r1"
    write_status(run)
    log = run / "events.jsonl"
    log.write_text(event("run_started", 1000.0, epochs=3, steps_per_epoch=10) + step_lines(20))
    s = RunSummary(RunDir(run))
    s.update()
    assert len(s.series["loss"]) == 20
    tmp = run / "events.new"
    tmp.write_text(event("run_started", 1000.0, epochs=3, steps_per_epoch=10) + step_lines(10))
    os.replace(tmp, log)  # what a resume does
    assert s.update()
    assert len(s.series["loss"]) == 10 and s.step == 10


def test_summary_failed_run_and_dead_process(tmp_path):
    run = tmp_path / "r1"
    write_status(run, state="failed", error="CUDA out of memory")
    (run / "events.jsonl").write_text(
        event(
            "run_failed",
            1.0,
            epoch=0,
            step=3,
            error="RuntimeError: CUDA out of memory",
            traceback="tb",
        )
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert s.state == "failed" and "out of memory" in s.error and s.traceback == "tb"
    dead = tmp_path / "r2"
    write_status(dead, state="running", host=socket.gethostname(), pid=999999)
    d = RunSummary(RunDir(dead))
    d.update()
    assert d.state == "failed" and "died" in d.error


def test_sampled_open_keeps_every_rare_event(tmp_path, monkeypatch):
    monkeypatch.setattr(sm, "SAMPLE_BYTES", 20_000)
    monkeypatch.setattr(sm, "TAIL_BYTES", 3_000)
    monkeypatch.setattr(sm, "HISTORY_POINTS", 100)
    run = tmp_path / "big"
    write_status(run)
    parts = [event("run_started", 1000.0, epochs=100, steps_per_epoch=100)]
    for ep in range(20):
        parts.append(step_lines(100, start=ep * 100 + 1, spe=100))
        parts.append(
            event("val", 2000.0 + ep, epoch=ep, step=(ep + 1) * 100, loss=1.0, knn_top1=float(ep))
        )
    (run / "events.jsonl").write_text("".join(parts))
    s = RunSummary(RunDir(run))
    s.update()
    assert len(s.series["knn"]) == 20  # every val event
    assert s.knn == 19.0 and s.step == 2000 and s.last_loss == pytest.approx(10.0 / 2000)
    n = len(s.series["loss"])
    assert 100 < n < 600  # sampled history + full tail, not all 2000
    assert list(s.series["loss"].step) == sorted(s.series["loss"].step)
    with open(run / "events.jsonl", "a") as fh:  # follows in full afterwards
        fh.write(step_lines(3, start=2001, spe=100))
    s.update()
    assert len(s.series["loss"]) == n + 3


def test_run_index_finds_and_forgets_runs(tmp_path):
    for name, started in (
        ("a-1", "2024-05-01T12:00:00+00:00"),
        ("b-2", "2024-05-02T12:00:00+00:00"),
    ):
        write_status(tmp_path / name, started=started)
    (tmp_path / ".queue").mkdir()
    index = RunIndex(tmp_path)
    changed, removed = index.refresh()
    assert changed == {"a-1", "b-2"} and not removed
    assert [s.id for s in index.ordered()] == ["b-2", "a-1"]
    assert index.refresh() == (set(), set())
    (tmp_path / "a-1" / "status.json").unlink()
    assert index.refresh() == (set(), {"a-1"})


# -- what a table shows across resumes, and which split ---------------------------------
def test_created_and_training_time_span_every_resume(tmp_path):
    run = tmp_path / "r1"
    write_status(run, state="running", created="2024-05-01T12:00:00+00:00",
                 started="2024-05-01T12:00:00+00:00")  # fmt: skip
    log = run / "events.jsonl"
    log.write_text(
        event("run_started", 1000.0, epochs=3, steps_per_epoch=10)
        + step_lines(5)
        + event("run_stopped", 1100.0, epoch=0, step=5, checkpoint="c")
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert s.duration(now=1e9) == 100.0
    # resumed an hour later: status.json gets a new start; the table keeps the first one
    write_status(run, state="finished", created="2024-05-01T12:00:00+00:00",
                 started="2024-05-01T13:00:00+00:00", ended="2024-05-01T13:01:00+00:00")  # fmt: skip
    with open(log, "a") as fh:
        fh.write(event("run_started", 5000.0, epochs=3, steps_per_epoch=10, resumed=True))
        fh.write(step_lines(5, start=6, t0=5000.0))
        fh.write(event("run_finished", 5050.0, epoch=2, step=10, results={}))
    s.update()
    assert s.duration() == 150.0  # 100 s before the stop + 50 s after the resume
    assert s.created == sm.parse_time("2024-05-01T12:00:00+00:00")


def test_a_killed_segment_counts_up_to_its_last_event(tmp_path):
    run = tmp_path / "r1"
    write_status(run, state="failed")
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=3, steps_per_epoch=10)
        + step_lines(5, t0=1000.0)  # last event at 1005: then killed, no run_stopped
        + event("run_started", 2000.0, epochs=3, steps_per_epoch=10, resumed=True)
        + step_lines(1, start=6, t0=2004.0)  # at 2010, then killed again
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert s.duration() == 15.0


def test_training_time_counts_each_launch_from_its_start_not_its_first_event(tmp_path):
    """A smoke run's trainer logs run_started after seconds of imports, data and model
    (``launched``: the supervisor's start of that launch); the time between a launch that
    was killed and the next one, whose run_resumed comes before its run_started, is no
    training."""
    run = tmp_path / "r1"
    write_status(run, state="finished")
    at = sm.parse_time("2024-05-01T12:00:00+00:00")
    (run / "events.jsonl").write_text(
        event("run_started", at + 12.0, epochs=3, steps_per_epoch=10,
              launched="2024-05-01T12:00:00+00:00")
        + step_lines(1, t0=at + 12.5)  # at +13.5, then killed
        + event("run_resumed", at + 110.0, epoch=0, step=0, checkpoint=None)
        + event("run_started", at + 110.5, epochs=3, steps_per_epoch=10, resumed=True,
                launched="2024-05-01T12:01:40+00:00")  # at + 100
        + event("run_finished", at + 111.0, epoch=2, step=1, results={})
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert s.duration() == pytest.approx(13.5 + 11.0)
    # a stale launch time (a trainer started without the supervisor) never reaches back
    # into the launch before it, and a log without launch times counts from run_started
    assert sm.launch_start({"launched": "2024-05-01T12:00:00+00:00"}, at + 200.0, at + 150.0) == (
        at + 150.0)
    assert sm.launch_start({}, at + 200.0, at + 150.0) == at + 200.0
    assert sm.launch_start({"launched": "2024-05-01T12:05:00+00:00"}, at + 200.0, None) == (
        at + 200.0)  # a launch time after the event's own: not this launch's


def test_run_resumed_supersedes_the_points_after_its_checkpoint(tmp_path):
    run = tmp_path / "r1"
    write_status(run)
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=3, steps_per_epoch=10)
        + step_lines(14)
        + event("val", 1014.0, epoch=1, step=14, loss=1.0, knn_top1=50.0)
        + event("run_resumed", 1100.0, epoch=1, step=10, checkpoint="checkpoints/step-10")
        + event("run_started", 1101.0, epochs=3, steps_per_epoch=10, resumed=True)
        + step_lines(3, start=11, t0=1101.0)
    )
    s = RunSummary(RunDir(run))
    s.update()
    loss = s.series["loss"]
    assert list(loss.step) == list(range(1, 14))  # 1..10, then 11..13 again; no old 11..14
    assert len(s.series["knn"]) == 0 and s.knn is None and s.step == 13
    assert list(loss.smooth) == pytest.approx(ema(list(loss.value), weight=loss.weight))


def test_linear_is_test_top1_where_there_is_a_test_split(tmp_path):
    run = tmp_path / "r1"
    write_status(run)
    log = run / "events.jsonl"
    log.write_text(event("probe", 1.0, epoch=0, step=5, val_top1=96.0, test_top1=45.0))
    s = RunSummary(RunDir(run))
    s.update()
    assert (s.linear, s.linear_split) == (45.0, "test")
    assert list(s.series["linear"].value) == [45.0]
    with open(log, "a") as fh:
        fh.write(event("probe", 2.0, epoch=1, step=10, val_top1=97.0))
    s.update()
    assert (s.linear, s.linear_split) == (97.0, "val")


def test_summary_reads_the_results_build_results_writes(tmp_path):
    """The contract: results as the engine builds them (from a real History), through the
    run_finished event, give the summary's final linear and kNN numbers."""
    pytest.importorskip("torch")
    from sslterm.profile.load import validate_text
    from sslterm.train.results import History, build_results

    run = RunDir(tmp_path / "r1")
    write_status(run.path)
    history = History()
    history.epochs.append({"epoch": 0, "loss": 5.0, "lr": 0.1, "ips": 100.0, "seconds": 1.0})
    history.val.append({"epoch": 0, "step": 10, "loss": 4.0, "top1": 50.0, "top5": 90.0,
                        "knn_top1": 61.25, "knn_top5": 88.0})  # fmt: skip
    history.probes.append({"epoch": 0, "step": 10, "protocol": "linear", "train_top1": 99.0,
                           "val_top1": 96.0, "test_top1": 45.5})  # fmt: skip
    results = build_results(validate_text("", "p.toml"), history, run)
    assert final_accuracies(results) == {"linear": 45.5, "linear_split": "test", "knn": 61.25}
    # the method's own val metrics, whatever they are, under ssl_val_<name>
    assert {k: v for k, v in results["final"].items() if k.startswith("ssl_")} == {
        "ssl_train_loss": 5.0, "ssl_val_loss": 4.0, "ssl_val_top1": 50.0, "ssl_val_top5": 90.0}
    assert results["final"]["method"] == "simclr"
    (run.path / "events.jsonl").write_text(
        event("run_finished", 1.0, epoch=0, step=10, results=results)
    )
    s = RunSummary(run)
    s.update()
    assert (s.linear, s.linear_split, s.knn) == (45.5, "test", 61.25)


def test_event_reader_public_position_api(tmp_path):
    """What the summary uses instead of the reader's private state."""
    log = tmp_path / "events.jsonl"
    reader = EventReader(log)
    assert not reader.has_new()  # no file yet
    log.write_text(event("log", 1.0, message="a") + event("log", 2.0, message="b"))
    assert reader.has_new()
    first = len(event("log", 1.0, message="a"))
    reader.skip_to(first, os.stat(log).st_ino)
    assert [e["message"] for e in reader.read_new()] == ["b"]
    assert not reader.has_new()


def test_notes_keep_the_non_step_events_for_a_log_pane(tmp_path):
    run = tmp_path / "r1"
    write_status(run)
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=3, steps_per_epoch=10)
        + step_lines(3)
        + event("epoch", 1003.0, epoch=0, step=3, loss=1.0)
        + event("checkpoint", 1003.5, epoch=1, step=3, path="checkpoints/a")
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert [e["kind"] for e in s.notes] == ["run_started", "epoch", "checkpoint"]
    assert s.noted == 3


def test_every_numeric_field_becomes_a_series_with_the_method(tmp_path):
    """Methods log their own scalars (BYOL's momentum on steps, SimCLR's top1 on val):
    each one is a series, named by where it came from."""
    run = tmp_path / "r1"
    write_status(run)
    (run / "profile.toml").write_text('[model]\nmethod = "byol"\n')
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=1, steps_per_epoch=2)
        + event("step", 1001.0, epoch=0, step=1, loss=2.0, lr=0.1, ips=9.0, momentum=0.99)
        + event("step", 1002.0, epoch=0, step=2, loss=1.0, lr=0.1, ips=9.0, momentum=0.995)
        + event("epoch", 1002.0, epoch=0, step=2, loss=1.5, online_top1=30.0, tag="x")
        + event("val", 1003.0, epoch=0, step=2, loss=1.2, top1=80.0, knn_top1=40.0, knn_top5=70.0)
        + event("probe", 1004.0, epoch=0, step=2, protocol="linear", val_top1=50.0, test_top1=49.0)
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert s.method == "byol"
    assert list(s.series["momentum"].value) == [0.99, 0.995]
    assert list(s.series["epoch_online_top1"].value) == [30.0]
    assert list(s.series["val_top1"].value) == [80.0]
    assert list(s.series["val_knn_top5"].value) == [70.0]
    assert list(s.series["knn"].value) == [40.0]
    assert list(s.series["linear_val_top1"].value) == [50.0]
    assert list(s.series["linear"].value) == [49.0]
    assert "epoch_tag" not in s.series and "val_step" not in s.series
    assert sm.metric_title("momentum") == "momentum" and sm.metric_title("ips") == "images/s"


def test_method_of_a_legacy_profile_is_simclr_and_run_started_wins(tmp_path):
    run = tmp_path / "r1"
    write_status(run)
    (run / "profile.toml").write_text('[model]\nencoder = "resnet18"\n')
    (run / "events.jsonl").write_text(event("run_started", 1000.0, epochs=1))
    s = RunSummary(RunDir(run))
    s.update()
    assert s.method == "simclr"
    with open(run / "events.jsonl", "a") as fh:
        fh.write(event("run_started", 1001.0, epochs=1, method="mocov3"))
    s.update()
    assert s.method == "mocov3"


def test_eta_of_a_live_run_from_its_recent_speed(tmp_path):
    run = tmp_path / "r1"
    write_status(run, state="running", host="gpu-node-elsewhere")  # alive as status says
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=10, steps_per_epoch=10) + step_lines(20, t0=1000.0)
    )
    s = RunSummary(RunDir(run))
    s.update()
    assert s.alive
    # 20 of 100 steps, one step a second (t = 1001 .. 1020): 80 s left at the last step
    assert s.eta(now=1020.0) == pytest.approx(80.0)
    assert s.eta(now=1030.0) == pytest.approx(70.0)
    write_status(run, state="finished", ended="2024-05-01T12:10:00+00:00")
    s.update()
    assert s.eta(now=1030.0) is None


def test_value_at_reads_the_last_point_at_or_before_x_and_points_from_lo():
    s = Series()
    for i, v in enumerate([1.0, math.nan, 3.0, 4.0], start=1):
        s.append(i, i / 10, i * 2.0, v)
    assert s.value_at("step", 0.5) is None
    assert s.value_at("step", 2.5) == 1.0  # the NaN at step 2 is skipped
    assert s.value_at("step", 3) == 3.0 and s.value_at("time", 100.0) == 4.0
    assert s.points("step", lo=3) == ([3.0, 4.0], [3.0, 4.0])
    assert s.points("step", width=10, lo=2.5) == ([3.0, 4.0], [3.0, 4.0])


def test_final_table_lists_every_final_number_by_protocol():
    results = {"final": {
        "ssl_val_loss": 1.5, "ssl_val_top1": 80.0, "method": "byol",
        "linear_eval": {"protocol": "offline", "epoch": 9, "val_top1": 50.0, "test_top1": 49.0},
        "knn": {"protocol": "kNN", "val_top1": 45.0},
        "online_probe": {"protocol": "online", "train_top1": None},
    }}  # fmt: skip
    assert sm.final_table(results) == [
        ("ssl", "val_loss", 1.5), ("ssl", "val_top1", 80.0),
        ("linear_eval", "val_top1", 50.0), ("linear_eval", "test_top1", 49.0),
        ("knn", "val_top1", 45.0),
    ]  # fmt: skip
    assert sm.final_table({}) == [] and sm.final_table(None) == []


# -- the epoch column and the ETA are the same before, across and after a resume ----------
def epoch_lines(epoch: int, spe: int, t0: float, step_time: float = 1.0,
                end_cost: float = 0.0) -> str:
    """One epoch as the trainer logs it: a step event per step, the epoch record, then its
    evaluations (``end_cost`` seconds) before the next epoch's first step."""
    first = epoch * spe + 1
    out = "".join(event("step", t0 + (i + 1) * step_time, epoch=epoch, step=first + i, loss=1.0,
                        lr=0.1, ips=100.0) for i in range(spe))
    t_end = t0 + spe * step_time
    out += event("epoch", t_end, epoch=epoch, step=first + spe - 1, loss=1.0)
    return out + event("val", t_end + end_cost, epoch=epoch, step=first + spe - 1, loss=1.0)


def test_a_killed_run_shows_the_epochs_it_completed(tmp_path):
    """Before: 4/30 with epochs 0-2 complete and steps of epoch 3 logged."""
    run = tmp_path / "r1"
    write_status(run, state="failed", error="killed")
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=30, steps_per_epoch=10)
        + "".join(epoch_lines(e, 10, 1000.0 + 20 * e) for e in range(3))
        + step_lines(4, start=31, t0=1070.0))
    s = RunSummary(RunDir(run))
    s.update()
    assert (s.epoch, s.epochs, s.step) == (3, 30, 34)


def test_the_epoch_never_steps_back_across_a_resume(tmp_path):
    """Before: 12/25 while epoch 11 ran, 11/25 at the resume, 12/25 at its first step."""
    run = tmp_path / "r1"
    write_status(run, state="running", host="gpu-node-elsewhere")
    log = run / "events.jsonl"
    log.write_text(event("run_started", 1000.0, epochs=25, steps_per_epoch=10)
                   + "".join(epoch_lines(e, 10, 1000.0 + 20 * e) for e in range(11))
                   + step_lines(5, start=111, t0=1220.0))  # epoch 11 under way, then killed
    s = RunSummary(RunDir(run))
    seen = []
    s.update()
    seen.append(s.epoch)
    with open(log, "a") as fh:
        fh.write(event("run_resumed", 1300.0, epoch=11, step=110, checkpoint="checkpoints/c"))
    s.update()
    seen.append(s.epoch)
    with open(log, "a") as fh:
        fh.write(event("run_started", 1301.0, epochs=25, steps_per_epoch=10, resumed=True))
        fh.write(step_lines(3, start=111, t0=1310.0))
    s.update()
    seen.append(s.epoch)
    with open(log, "a") as fh:
        fh.write(step_lines(7, start=114, t0=1313.0))
        fh.write(event("epoch", 1320.0, epoch=11, step=120, loss=1.0))
    s.update()
    seen.append(s.epoch)
    assert seen == [11, 11, 11, 12]


def test_stop_and_finish_records_count_epochs_done():
    """``run_stopped``'s epoch is the position a resume continues from (epochs done),
    ``run_finished``'s the last epoch that ran."""
    assert sm.epochs_done("run_stopped", 3) == 3
    assert sm.epochs_done("run_finished", 29) == 30
    assert sm.epochs_done("checkpoint", 3) == 3 and sm.epochs_done("epoch", 2) == 3
    assert sm.epochs_done("log", 2) is None and sm.epochs_done("step", None) is None


def test_eta_right_after_a_resume_counts_the_epoch_ends_still_to_come(tmp_path):
    """Each epoch: 10 steps of 1 s, then 10 s of evaluation. Before: the resumed launch's
    first steps alone gave 1 s a step and no evaluations, 18 s for a run 108 s from its end."""
    run = tmp_path / "r1"
    write_status(run, state="running", host="gpu-node-elsewhere")
    log = event("run_started", 1000.0, epochs=5, steps_per_epoch=10)
    log += "".join(epoch_lines(e, 10, 1000.0 + 20 * e, end_cost=10.0) for e in range(3))
    log += step_lines(2, start=31, t0=1030.0)  # steps 31, 32 of epoch 3 at 1061, 1062: killed
    log += event("run_resumed", 1100.0, epoch=3, step=30, checkpoint="checkpoints/c")
    log += event("run_started", 1101.0, epochs=5, steps_per_epoch=10, resumed=True)
    log += "".join(event("step", 1110.0 + i, epoch=3, step=30 + i, loss=1.0)
                   for i in (1, 2))  # 1 s a step
    (run / "events.jsonl").write_text(log)
    s = RunSummary(RunDir(run))
    s.update()
    # 18 steps left at 1 s, and the ends of epochs 3 and 4 at 10 s each
    assert s.eta(now=1112.0) == pytest.approx(18.0 + 2 * 10.0)


def test_eta_with_one_step_event_an_epoch_uses_the_rate_across_epochs(tmp_path):
    """``log_every`` >= steps per epoch: no two steps of an epoch to time, so the rate over
    whole epochs, evaluations included, gives the time left."""
    run = tmp_path / "r1"
    write_status(run, state="running", host="gpu-node-elsewhere")
    (run / "events.jsonl").write_text(
        event("run_started", 1000.0, epochs=10, steps_per_epoch=10)
        + "".join(event("step", 1000.0 + 20 * (e + 1), epoch=e, step=10 * (e + 1)) for e in range(3)))
    s = RunSummary(RunDir(run))
    s.update()
    assert s.eta(now=1060.0) == pytest.approx(70 * 2.0)


def test_newest_first_is_the_order_of_the_app_and_of_sslterm_runs(tmp_path):
    for name, created in (("a-20240501-120000", "2024-05-03T12:00:00+00:00"),
                          ("b-20240502-120000", "2024-05-01T12:00:00+00:00"),
                          ("c-20240503-120000", "2024-05-02T12:00:00+00:00")):
        write_status(tmp_path / name, created=created)
    index = RunIndex(tmp_path)
    index.refresh()
    order = [s.id for s in sm.newest_first(index.runs.values())]
    assert order == ["a-20240501-120000", "c-20240503-120000", "b-20240502-120000"]
    assert [s.id for s in index.ordered()] == order


def test_counts_are_pluralised():
    assert [sm.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert sm.plural(1, "process", "processes") == "1 process"
    assert sm.plural(4, "process", "processes") == "4 processes"


@pytest.mark.parametrize(("done", "epochs", "step", "mid", "words"), [
    (3, 30, 90, False, "stopped after epoch 2 (3 of 30 epochs done)"),
    (3, 30, 95, True, "stopped in epoch 3 at step 95 (3 of 30 epochs done)"),
    (0, 1, 0, False, "stopped before epoch 0 began (0 of 1 epoch done)"),
    (1, None, 12, None, "stopped at step 12 (1 epoch done)"),
])
def test_stopped_words_name_the_last_epoch_that_ran(done, epochs, step, mid, words):
    """Before: "stopped at epoch 3" after epochs 0-2 ran."""
    assert sm.stopped_words(done, epochs, step, mid) == words
