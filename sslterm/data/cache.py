"""The uint8 tensor cache for small-image datasets.

Small images (CIFAR, SVHN, small image folders, synthetic) are decoded once into
``images`` uint8 [N,3,H,W] + ``labels`` int64 [N] and stored as ONE safetensors
file next to the data: ``<root>/.sslterm-cache/<dataset>-<split>-<key>.safetensors``.
``key`` hashes a cheap fingerprint of the source (paths, sizes, mtimes; generation
parameters for synthetic data), so a changed source gets a new file and an
unchanged one is reused. Files are written to a temp name and ``os.replace``-d,
so a reader (or a second rank building the same file) never sees half a file.
When the data root is not writable the cache goes to ``$XDG_CACHE_HOME/sslterm``.

A cache file is memory-mapped, not read: its images stay in the page cache, one copy per
node however many ranks train from it, and a split's rows are indexed (:class:`ImageRows`)
and gathered per batch instead of copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save as save_safetensors

from sslterm.files import atomic_write_bytes

log = logging.getLogger(__name__)

# Bump when the file layout or decoding changes, so old caches are not reused.
CACHE_VERSION = 1
CACHE_DIRNAME = ".sslterm-cache"


@dataclass
class ImageTensors:
    """Decoded images: ``images`` uint8 [N,3,H,W], ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 [N,3,H,W], got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be int64 [{len(images)}], got {labels.dtype} {tuple(labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, at: torch.Tensor) -> torch.Tensor:
        """The images at ``at``: a copy of those rows alone."""
        return self.images[at]

    def rows(self, indices: torch.Tensor) -> ImageRows:
        """The rows at ``indices``, indexed rather than copied (see :class:`ImageRows`)."""
        return ImageRows(self, indices)


class ImageRows:
    """Rows ``indices`` of ``source``, gathered batch by batch and never copied whole, so a
    split of a memory-mapped cache stays the one copy in the page cache however many ranks
    and evaluation passes read it. ``labels`` (small) are copied; ``take`` gathers images.
    """

    def __init__(self, source: ImageTensors, indices: torch.Tensor) -> None:
        self.source, self.indices = source, indices
        self.labels = source.labels[indices]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def nbytes(self) -> int:
        """Bytes the rows' images take once copied (e.g. to a GPU)."""
        return len(self) * math.prod(self.source.images.shape[1:])

    def take(self, at: torch.Tensor) -> torch.Tensor:
        """uint8 [len(at),3,H,W]: the images at positions ``at`` of these rows."""
        return self.source.images[self.indices[at]]

    def to(self, device: torch.device, chunk_bytes: int = 64 << 20) -> ImageTensors:
        """All the rows copied onto ``device`` a chunk at a time, so the host never holds a
        second full copy on the way (the GPU-resident training images)."""
        images = self.source.images
        out = torch.empty((len(self), *images.shape[1:]), dtype=torch.uint8, device=device)
        step = max(1, chunk_bytes // max(1, math.prod(images.shape[1:])))
        for start in range(0, len(self), step):
            out[start:start + step] = images[self.indices[start:start + step]].to(device)
        return ImageTensors(out, self.labels.to(device))


def file_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> list[list[object]]:
    """``[path, size, mtime_ns]`` per file: cheap (one stat each), no content hashing."""
    rows: list[list[object]] = []
    for path in paths:
        st = os.stat(path)
        rows.append([os.fspath(path), st.st_size, st.st_mtime_ns])
    return rows


def cache_key(fingerprint: object) -> str:
    """16 hex digits of sha256 over the canonical JSON of ``fingerprint``."""
    blob = json.dumps([CACHE_VERSION, fingerprint], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dirs(root: str | os.PathLike[str]) -> list[Path]:
    """Where caches for ``root`` may live: next to the data first, else a per-root user dir."""
    root = Path(root).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:12]
    return [root / CACHE_DIRNAME, base / "sslterm" / digest]


def load_or_build(
    root: str | os.PathLike[str],
    name: str,
    fingerprint: object,
    build: Callable[[], ImageTensors],
) -> ImageTensors:
    """Return the cached tensors for ``name`` if the fingerprint matches, else build and store them.

    ``name`` is ``<dataset>-<split>``; older files of the same name are removed once a new
    one is written, so a changed source does not pile up stale copies.
    """
    filename = f"{name}-{cache_key(fingerprint)}.safetensors"
    for directory in cache_dirs(root):
        cached = _try_load(directory / filename)
        if cached is not None:
            return cached
    log.info("building tensor cache %s", filename)
    tensors = build()
    for directory in cache_dirs(root):
        if _try_save(directory, filename, tensors):
            _remove_stale(directory, name, keep=filename)
            # the builder maps the file too: its decoded copy is freed, as on the other ranks
            return _try_load(directory / filename) or tensors
    log.warning("could not write tensor cache %s; using it from memory only", filename)
    return tensors


def save_tensors(path: Path, tensors: ImageTensors) -> None:
    """Write ``tensors`` to ``path`` atomically."""
    blob = save_safetensors(
        {"images": tensors.images.contiguous(), "labels": tensors.labels.contiguous()},
        metadata={"format": "sslterm-image-cache", "version": str(CACHE_VERSION)},
    )
    atomic_write_bytes(path, blob)


def load_tensors(path: Path) -> ImageTensors:
    """Map a cache file: the images are a view of the file's pages (copy-on-write, so the
    file never changes), shared through the page cache by every process that maps it; the
    small labels are copied. Raises ``ValueError`` for a file that is not a whole cache."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little")
        if len(head) < 8 or n > size - 8:
            raise ValueError(f"{size} bytes cannot hold a safetensors header of {n}")
        header = json.loads(f.read(n))
    if header.get("__metadata__", {}).get("format") != "sslterm-image-cache":
        raise ValueError("not an sslterm image cache")
    data = torch.from_file(os.fspath(path), shared=False, size=size, dtype=torch.uint8)

    def tensor(name: str, dtype: torch.dtype, code: str) -> torch.Tensor:
        entry = header[name]
        begin, end = (8 + n + offset for offset in entry["data_offsets"])
        shape = [int(d) for d in entry["shape"]]
        fits = 8 + n <= begin and end <= size and end - begin == math.prod(shape) * dtype.itemsize
        if entry["dtype"] != code or not fits:
            raise ValueError(f"{name}: {entry} does not fit the file ({size} bytes)")
        raw = data[begin:end]
        return raw.view(shape) if dtype == torch.uint8 else raw.clone().view(dtype).view(shape)

    return ImageTensors(tensor("images", torch.uint8, "U8"), tensor("labels", torch.int64, "I64"))


def _try_load(path: Path) -> ImageTensors | None:
    if not path.is_file():
        return None
    try:
        return load_tensors(path)
    except Exception as exc:  # a truncated or foreign file: rebuild rather than fail the run
        log.warning("ignoring unreadable tensor cache %s (%s)", path, exc)
        return None


def _try_save(directory: Path, filename: str, tensors: ImageTensors) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / filename, tensors)
    except OSError as exc:
        log.info("cannot write tensor cache in %s (%s)", directory, exc)
        return False
    return True


def _remove_stale(directory: Path, name: str, keep: str) -> None:
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{16}\.safetensors")
    for old in directory.iterdir():
        if old.name != keep and pattern.fullmatch(old.name):
            old.unlink(missing_ok=True)


def decode_threads() -> int:
    """Threads for decoding: PIL releases the GIL while decoding, a few threads suffice."""
    return max(1, min(8, os.cpu_count() or 1))


def decode_files(
    paths: Sequence[str | os.PathLike[str]],
    labels: Sequence[int],
    size: int,
    threads: int | None = None,
) -> ImageTensors:
    """Decode image files to uint8 [N,3,size,size] in a few threads.

    Images of another size are fitted (resized on the shorter side, centre-cropped), so a
    folder of mixed sizes still gives one tensor.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def decode_range(bounds: tuple[int, int]) -> None:
        for i in range(*bounds):
            out[i] = _read_rgb(paths[i], size)

    chunks = _chunks(len(paths), threads or decode_threads())
    with ThreadPoolExecutor(max_workers=max(1, len(chunks))) as pool:
        list(pool.map(decode_range, chunks))
    return hwc_to_tensors(out, labels)


def hwc_to_tensors(images: np.ndarray, labels: Sequence[int] | np.ndarray) -> ImageTensors:
    """uint8 [N,H,W,3] numpy + labels -> contiguous ImageTensors [N,3,H,W]."""
    chw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(chw, torch.as_tensor(np.asarray(labels), dtype=torch.int64))


def _read_rgb(path: str | os.PathLike[str], size: int) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // max(1, parts)) if n else 1
    return [(start, min(n, start + step)) for start in range(0, n, step)]
