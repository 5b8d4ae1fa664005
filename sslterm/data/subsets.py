"""Class lists of the SCAN ImageNet subsets (ImageNet-50/100/200).

The lists are ``data/imagenet_subsets/imagenet_{50,100,200}.txt`` of the public repository
wvangansbeke/Unsupervised-Classification; each line is ``<wnid> <name>`` and the label is
the line index. They are fetched once into ``data.root`` and checked against the sha256 of
the published files, so a moved or edited upstream file cannot silently change the classes.
A local ``data.class_list`` file is used as given (no checksum).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from sslterm.data.cache import write_atomic
from sslterm.errors import UserError

SCAN_URL = (
    "https://raw.githubusercontent.com/wvangansbeke/Unsupervised-Classification/"
    "master/data/imagenet_subsets/{filename}"
)
SCAN_SHA256 = {
    50: "58cbf7955f5591af5bdda091ce2144d9ed18a3e70866341d17689ab807a7db90",
    100: "583680dd19e33fd7f80fe50e44c385fc4a6ebb977fbcc9409daf3ba7aa275f24",
    200: "14cb3f6b262c342b693278e0986b0f86cd3194184a5ef9ce606bdb8661f47a51",
}
FETCH_TIMEOUT_S = 15.0
# Verified lists may also be shipped inside the package (they are sha-checked like fetched ones).
PACKAGED_DIR = Path(__file__).with_name("imagenet_subsets")


def scan_filename(n: int) -> str:
    return f"imagenet_{n}.txt"


def scan_class_list(
    n: int, root: str | os.PathLike[str], class_list: str = "", download: bool = True
) -> list[str]:
    """The wnids of ImageNet-``n`` in label order.

    Order of lookup: ``class_list`` (as given), ``<root>/imagenet_<n>.txt``, a packaged copy,
    then a fetch from GitHub into ``<root>/imagenet_<n>.txt``.
    """
    name = f"imagenet{n}"
    if class_list:
        path = Path(class_list).expanduser()
        if not path.is_file():
            raise UserError(f"{name}: data.class_list file {path} not found")
        return parse_class_list(path.read_bytes(), path, name)
    target = Path(root).expanduser() / scan_filename(n)
    for path in (target, PACKAGED_DIR / scan_filename(n)):
        if path.is_file():
            return parse_class_list(_checked(path.read_bytes(), n, path), path, name)
    if not download:
        raise UserError(
            f"data.class_list: {name}: no class list at {target} and data.download = false; "
            f"put the SCAN list there, set data.class_list to a local file, or allow the download"
        )
    _fetch(n, target)
    return parse_class_list(target.read_bytes(), target, name)


def parse_class_list(data: bytes, path: Path, name: str) -> list[str]:
    """First token of every non-blank line: the class folder name (a wnid)."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{name}: class list {path} is not UTF-8 text") from None
    wnids = [line.split()[0] for line in lines if line.strip()]
    if not wnids:
        raise UserError(f"{name}: class list {path} is empty; expected '<wnid> <name>' lines")
    dupes = sorted({w for w in wnids if wnids.count(w) > 1})
    if dupes:
        raise UserError(f"{name}: class list {path} repeats {', '.join(dupes[:5])}")
    return wnids


def _checked(data: bytes, n: int, path: Path) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != SCAN_SHA256[n]:
        raise UserError(
            f"imagenet{n}: class list {path} has sha256 {digest}, expected {SCAN_SHA256[n]}; "
            f"delete it to fetch it again, or set data.class_list to use a file as given"
        )
    return data


def _fetch(n: int, target: Path) -> None:
    url = SCAN_URL.format(filename=scan_filename(n))
    fill = (
        f"put the SCAN list ({url}, sha256 {SCAN_SHA256[n]}) at {target}, "
        f"or set data.class_list to a local '<wnid> <name>' file"
    )
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"imagenet{n}: could not fetch the class list ({reason}); {fill}") from exc
    if hashlib.sha256(data).hexdigest() != SCAN_SHA256[n]:
        raise UserError(f"imagenet{n}: the fetched class list failed its sha256 check; {fill}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
    except OSError as exc:
        raise UserError(f"imagenet{n}: cannot write {target} ({exc}); {fill}") from exc
