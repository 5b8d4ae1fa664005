"""Fixed run directories for the TUI tests and snapshots (helpers, no tests here).

Everything is fixed: ids, times, values, so snapshots are the same on every
machine (the tests also pin TZ=UTC).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

PROFILE = """\
# {name}: a fixed profile for the TUI tests
name = "{name}"

[data]
dataset = "cifar10"
num_workers = 4

[model]
encoder = "resnet18"
temperature = {temperature}

[train]
epochs = {epochs}
batch_size = 512
base_lr = {lr}
"""

T0 = 1714564800.0  # 2024-05-01 12:00:00 UTC

SMOKE = """\
# Smoke test: a tiny SimCLR run on generated images (a fixed copy for the TUI tests).
description = "tiny run on synthetic images"

[data]
dataset = "synthetic"
synthetic_size = 256
image_size = 32
num_workers = 0

[model]
encoder = "test_resnet"        # timm's tiny test ResNet

[simclr]
projector_hidden_dim = 64
projector_dim = 32
temperature = 0.5

[train]
epochs = 3
batch_size = 64
optimizer = "sgd"              # tiny batches
base_lr = 0.05
lr_scaling = "none"
precision = "no"
log_every = 1

[probe]
interval = 2                   # linear eval at epochs 0 and 2
epochs = 20
"""


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _line(kind: str, t: float, **fields) -> str:
    return json.dumps({"v": 1, "kind": kind, "t": round(t, 3), **fields}, separators=(",", ":"))


def write_run(
    out: Path,
    run_id: str,
    *,
    state: str,
    start: float,
    epochs: int = 10,
    done_epochs: int = 10,
    spe: int = 20,
    lr: float = 0.3,
    temperature: float = 0.1,
    error: str = "",
    traceback: str = "",
    host: str = "gpu-node-7",
) -> Path:
    """A run directory with a plausible, deterministic event log."""
    run = out / run_id
    run.mkdir(parents=True)
    name = run_id.rsplit("-", 2)[0]
    (run / "profile.toml").write_text(
        PROFILE.format(name=name, temperature=temperature, epochs=epochs, lr=lr)
    )
    lines = [
        _line(
            "run_started",
            start,
            run_id=run_id,
            profile=name,
            dataset="cifar10",
            encoder="resnet18",
            world_size=1,
            devices=["NVIDIA H100"],
            epochs=epochs,
            steps_per_epoch=spe,
            global_batch=512,
            resumed=False,
        )
    ]
    t = start
    step = 0
    for ep in range(done_epochs):
        for _ in range(spe):
            step += 1
            t += 3.0
            loss = 6.0 * math.exp(-step / (spe * 3)) + 0.6 + 0.05 * math.sin(step * lr * 10)
            warm = min(1.0, step / spe)
            rate = lr * warm * 0.5 * (1 + math.cos(math.pi * step / (spe * epochs)))
            lines.append(
                _line(
                    "step",
                    t,
                    epoch=ep,
                    step=step,
                    loss=round(loss, 5),
                    lr=round(rate, 6),
                    ips=round(1800 + 40 * math.sin(step), 1),
                )
            )
        lines.append(
            _line(
                "epoch",
                t,
                epoch=ep,
                step=step,
                loss=round(loss, 5),
                lr=rate,
                ips=1800.0,
                seconds=60.0,
            )
        )
        knn = round(30 + 50 * (1 - math.exp(-(ep + 1) / 4)) * (1 + temperature), 2)
        lines.append(
            _line(
                "val",
                t,
                epoch=ep,
                step=step,
                loss=round(loss + 0.1, 4),
                top1=90.0,
                top5=99.0,
                knn_top1=knn,
                knn_top5=95.0,
            )
        )
        if ep % 5 == 4:
            lines.append(
                _line(
                    "probe",
                    t,
                    epoch=ep,
                    step=step,
                    protocol="linear",
                    val_top1=knn + 5,
                    test_top1=knn + 4.5,
                )
            )
    if state == "failed":
        lines.append(
            _line(
                "run_failed",
                t + 1,
                epoch=done_epochs,
                step=step,
                error=error,
                traceback=traceback,
                rank=0,
            )
        )
    elif state == "stopped":
        lines.append(
            _line("run_stopped", t + 1, epoch=done_epochs, step=step, checkpoint="checkpoints/x")
        )
    elif state == "finished":
        lines.append(_line("run_finished", t + 1, epoch=done_epochs - 1, step=step, results={}))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    (run / "stdout.log").write_text(
        "".join(f"[{run_id}] epoch {ep}: loss ok\n" for ep in range(done_epochs))
        + (f"Traceback (most recent call last):\n{traceback}\n{error}\n" if error else "")
    )
    status = {
        "state": state,
        "run_id": run_id,
        "profile": name,
        "host": host,
        "pid": 4242,
        "created": _iso(start),
        "started": _iso(start),
        "ended": _iso(t + 2),
        "exit_code": 0 if state != "failed" else 1,
        "error": error or None,
    }
    (run / "status.json").write_text(json.dumps(status, indent=2))
    return run


def add_outputs(run: Path) -> None:
    """What a finished run leaves beside its log: results.json, a checkpoint, features."""
    ckpt = run / "checkpoints" / "epoch-0009-step-000200"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"\0" * 3 * 1024 * 1024)
    (ckpt / "COMPLETE").write_text("{}")
    features = run / "features"
    features.mkdir()
    (features / "features.safetensors").write_bytes(b"\0" * 1536 * 1024)
    (features / "meta.json").write_text("{}")
    results = {
        "run_id": run.name,
        "checkpoint": "checkpoints/epoch-0009-step-000200",
        "final": {
            "ssl_train_loss": 0.8163,
            "ssl_val_loss": 0.9163,
            "ssl_val_top1": 90.0,
            "method": "simclr",
            "linear_eval": {"protocol": "offline linear eval", "epoch": 9,
                            "val_top1": 85.5, "test_top1": 85.0},  # fmt: skip
            "knn": {"protocol": "weighted kNN", "val_top1": 80.5, "val_top5": 95.0},
            "online_probe": {"protocol": "online linear probe", "train_top1": 61.25},
        },
    }
    (run / "results.json").write_text(json.dumps(results, indent=2))


def make_runs(out: Path) -> Path:
    """Three runs: finished (with results, a checkpoint and features), failed, stopped."""
    add_outputs(
        write_run(out, "cifar10-20240501-120000", state="finished", start=T0, lr=0.3, temperature=0.1)
    )
    write_run(
        out,
        "cifar10-20240501-150000",
        state="failed",
        start=T0 + 3 * 3600,
        done_epochs=4,
        lr=0.6,
        temperature=0.2,
        error="rank 0: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
        traceback='  File "sslterm/train/engine.py", line 212, in step\n    loss = method(batch)\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB',
    )
    write_run(
        out,
        "smoke-20240501-180000",
        state="stopped",
        start=T0 + 6 * 3600,
        epochs=3,
        done_epochs=2,
        spe=8,
        lr=0.05,
        temperature=0.5,
    )
    return out


# -- helpers for Pilot tests ------------------------------------------------------------
def screen_text(app) -> str:
    """The current screen as plain text (what a user would read)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_until(pilot, predicate, timeout: float = 20.0, what: str = "", step: float = 0.1):
    """Poll ``predicate`` between frames; generous timeouts for a loaded 2-core box.
    ``what`` (text, or a callable giving text) goes into the failure message."""
    import time as _time

    deadline = _time.monotonic() + timeout
    while True:
        if predicate():
            return
        if _time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {detail or predicate}")
        await pilot.pause(step)


def shows_its_view(chart) -> bool:
    """The chart has replotted what it was last told to show (each chart replots on its own
    timer, so one chart's new view says nothing of another's)."""
    return bool(chart.draws) and chart._drawn_view == chart._view()


def notices(app) -> str:
    """Every notification (toast) the app has shown, joined."""
    return "\n".join(str(n.message) for n in app._notifications)
