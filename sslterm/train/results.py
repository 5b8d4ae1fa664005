"""A run's history of epochs, validations and probes, and the results.json built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslterm.profile.schema import Profile
from sslterm.runs import checkpoints as ckpt
from sslterm.runs.events import json_safe, read_events
from sslterm.runs.store import RunDir

# keys of a val record that are not the method's own SSL metrics
VAL_CONTEXT = ("v", "kind", "t", "epoch", "step", "loss", "knn_top1", "knn_top5")


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


def load_history(run_path: Path) -> History:
    """The history so far from the run's events, so a resumed run's results cover it all."""
    h = History()
    slots = {"epoch": h.epochs, "val": h.val, "probe": h.probes}
    for e in read_events(run_path):
        if e["kind"] in slots:
            slots[e["kind"]].append(e)
    return h


def _final(records: list[dict[str, Any]], key: str) -> Any:
    for r in reversed(records):
        if r.get(key) is not None:
            return r[key]
    return None


def val_metric_names(val: list[dict[str, Any]]) -> list[str]:
    """The method's own validation metrics (SimCLR: top1, top5), sorted, from the val records."""
    return sorted({k for r in val for k in r if k not in VAL_CONTEXT})


def build_results(p: Profile, h: History, run: RunDir) -> dict[str, Any]:
    """Final numbers, each named by protocol; the last value, never the best one."""
    newest = ckpt.newest_checkpoint(run.checkpoints)
    final_probe = h.probes[-1] if h.probes else None
    final: dict[str, Any] = {
        "method": p.model.method,
        "ssl_train_loss": _final(h.epochs, "loss"),
        "ssl_val_loss": _final(h.val, "loss"),
        **{f"ssl_val_{name}": _final(h.val, name) for name in val_metric_names(h.val)},
    }
    results: dict[str, Any] = {
        "run_id": run.id,
        "profile": p.name,
        "dataset": p.data.dataset,
        "method": p.model.method,
        "encoder": p.model.encoder,
        "epochs": p.train.epochs,
        "checkpoint": f"checkpoints/{newest[0].name}" if newest else None,
        "final": final,
        "history": {
            "epochs": [{k: e.get(k) for k in ("epoch", "loss", "lr", "ips", "seconds", "online_top1")}
                       for e in h.epochs],
            "val": [{k: v for k, v in e.items() if k not in ("v", "kind", "t")} for e in h.val],
            "linear_eval": [{k: v for k, v in e.items() if k not in ("v", "kind", "t")}
                            for e in h.probes],
        },
    }
    if final_probe:
        final["linear_eval"] = {
            "protocol": "offline linear eval: frozen encoder, eval mode, un-augmented images",
            "epoch": final_probe["epoch"],
            **{k: final_probe[k] for k in final_probe if k.endswith(("_top1", "_top5"))},
        }
    if h.val and _final(h.val, "knn_top1") is not None:
        final["knn"] = {
            "protocol": f"weighted kNN (k={p.probe.knn_k}, T={p.probe.knn_temperature}) "
            "on the held-out split",
            "val_top1": _final(h.val, "knn_top1"),
            "val_top5": _final(h.val, "knn_top5"),
        }
    if p.train.online_probe and h.epochs:
        final["online_probe"] = {
            "protocol": "online linear probe on detached features of augmented training views",
            "train_top1": _final(h.epochs, "online_top1"),
        }
    return json_safe(results)
