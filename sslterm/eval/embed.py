"""A 2-D look at an exported feature space: PCA (numpy, always there) or UMAP (the optional
``umap-learn``), over a seeded sample of one split, labelled by class. Reads the export with
``safetensors.numpy``, so the app can draw it without importing torch.

``sslterm embed RUN`` saves the projection beside the features as ``embedding.json``
(written atomically); the run's detail view draws that file, or a PCA made on the fly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslterm.errors import UserError
from sslterm.eval.layout import FEATURES_FILE, META_FILE
from sslterm.files import atomic_write_text

METHODS = ("auto", "pca", "umap")
EMBED_FILE = "embedding.json"
MAX_POINTS = 2000
UMAP_INSTALL = 'pip install umap-learn (in a clone: pip install -e ".[umap]")'


@dataclass(frozen=True)
class Embedding:
    points: list[tuple[float, float]]
    labels: list[int]
    method: str
    """``pca`` or ``umap``."""
    split: str
    total: int
    """Features in the split (the points are a sample of at most ``max_points``)."""
    num_classes: int

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "split": self.split, "total": self.total,
                "num_classes": self.num_classes, "labels": self.labels,
                "points": [[round(x, 6), round(y, 6)] for x, y in self.points]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Embedding:
        return cls([(float(x), float(y)) for x, y in data["points"]],
                   [int(v) for v in data["labels"]], str(data["method"]), str(data["split"]),
                   int(data["total"]), int(data["num_classes"]))


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def load_split(folder: Path, split: str | None = None) -> tuple[Any, Any, str, int]:
    """(features [N, D], labels [N], split, number of classes) of one split of an export:
    ``split``, else test, else val, else train."""
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = folder / FEATURES_FILE
    try:
        tensors = load_file(str(file))
    except FileNotFoundError:
        raise UserError(f"{file}: no exported features") from None
    except (OSError, SafetensorError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({err})") from None
    have = [n for n in ("test", "val", "train") if f"{n}_features" in tensors]
    have += sorted({k.rsplit("_", 1)[0] for k in tensors if k.endswith("_features")} - set(have))
    if split is None:
        if not have:
            raise UserError(f"{file}: no <split>_features tensor")
        split = have[0]
    if f"{split}_features" not in tensors or f"{split}_labels" not in tensors:
        raise UserError(f"--split {split}: not in {file} (it has: {', '.join(have) or 'none'})")
    features = np.asarray(tensors[f"{split}_features"], dtype=np.float64)
    labels = np.asarray(tensors[f"{split}_labels"]).astype(np.int64)
    if features.ndim != 2 or labels.shape != features.shape[:1] or not len(labels):
        raise UserError(f"{file}: {split}_features must be [N, D] and {split}_labels [N]")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    classes = meta.get("num_classes") if isinstance(meta, dict) else None
    return features, labels, split, int(classes) if isinstance(classes, int) else int(
        labels.max()) + 1


def pca_2d(features: Any) -> Any:
    """The first two principal components (signs fixed: the largest loading positive, so
    the picture is the same on every machine)."""
    import numpy as np

    x = features - features.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    if comps.shape[0] < 2:  # one feature dimension: a line
        comps = np.vstack([comps, np.zeros_like(comps)])
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    return x @ (comps * np.where(signs == 0, 1, signs)[:, None]).T


def project(
    folder: Path,
    method: str = "auto",
    split: str | None = None,
    max_points: int = MAX_POINTS,
    seed: int = 0,
) -> Embedding:
    """Project a seeded sample of at most ``max_points`` features of ``split`` to 2-D.
    ``auto``: UMAP where umap-learn is installed, else PCA."""
    import numpy as np

    if method not in METHODS:
        raise UserError(f"--method {method}: use one of {', '.join(METHODS)}")
    if max_points < 2:
        raise UserError(f"--max-points: must be >= 2 (got {max_points})")
    if method == "umap" and not umap_available():
        raise UserError(f"--method umap needs umap-learn, which is not installed: {UMAP_INSTALL}")
    features, labels, split, classes = load_split(folder, split)
    total = len(labels)
    if total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, max_points, replace=False))
        features, labels = features[keep], labels[keep]
    used = "umap" if method == "umap" or (method == "auto" and umap_available()) else "pca"
    if used == "umap" and len(labels) > 3:
        import umap

        points = umap.UMAP(n_components=2, random_state=seed,
                           n_neighbors=min(15, len(labels) - 1)).fit_transform(features)
    else:
        used, points = "pca", pca_2d(features)
    return Embedding([(float(x), float(y)) for x, y in points], labels.tolist(), used, split,
                     total, classes)


def save_embedding(folder: Path, embedding: Embedding) -> Path:
    """``embedding.json`` beside the features, replaced atomically."""
    path = folder / EMBED_FILE
    atomic_write_text(path, json.dumps(embedding.to_json()) + "\n")
    return path


def saved_embedding(folder: Path) -> Embedding | None:
    """The saved projection, when it is newer than the features it was made from."""
    path, features = folder / EMBED_FILE, folder / FEATURES_FILE
    try:
        if path.stat().st_mtime < features.stat().st_mtime:
            return None
        return Embedding.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
