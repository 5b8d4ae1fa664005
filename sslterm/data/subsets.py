"""Class lists of the SCAN ImageNet subsets (ImageNet-50/100/200), shipped with sslterm.

The lists are ``data/imagenet_subsets/imagenet_{50,100,200}.txt`` of the public repository
wvangansbeke/Unsupervised-Classification, copied byte for byte into this package
(``sslterm/data/imagenet_subsets/``), so the subsets work on offline compute nodes with only
``data.root`` set. Each line is ``<wnid> <name>``; the label is the line index. The packaged
files are checked against the sha256 of the published ones, so an edited install cannot
silently change the classes. A local ``data.class_list`` file is used as given (no checksum).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sslterm.errors import UserError

SCAN_SOURCE = (
    "https://github.com/wvangansbeke/Unsupervised-Classification/tree/master/"
    "data/imagenet_subsets"
)
SCAN_SHA256 = {
    50: "58cbf7955f5591af5bdda091ce2144d9ed18a3e70866341d17689ab807a7db90",
    100: "583680dd19e33fd7f80fe50e44c385fc4a6ebb977fbcc9409daf3ba7aa275f24",
    200: "14cb3f6b262c342b693278e0986b0f86cd3194184a5ef9ce606bdb8661f47a51",
}
PACKAGED_DIR = Path(__file__).with_name("imagenet_subsets")


def scan_filename(n: int) -> str:
    return f"imagenet_{n}.txt"


def scan_class_list(n: int, class_list: str = "") -> list[str]:
    """The wnids of ImageNet-``n`` in label order: from ``class_list`` if set (as given),
    else from the packaged SCAN list (sha256-checked)."""
    name = f"imagenet{n}"
    if class_list:
        path = Path(class_list).expanduser()
        if not path.is_file():
            raise UserError(f"{name}: data.class_list file {path} not found")
        return parse_class_list(path.read_bytes(), path, name)
    path = PACKAGED_DIR / scan_filename(n)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(
            f"{name}: the packaged class list {path} is missing ({exc.strerror}); reinstall "
            f"sslterm, or set data.class_list to a local '<wnid> <name>' file"
        ) from None
    return parse_class_list(_checked(data, n, path), path, name)


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
            f"imagenet{n}: class list {path} has sha256 {digest}, expected {SCAN_SHA256[n]} "
            f"(the SCAN list, {SCAN_SOURCE}); reinstall sslterm, or set data.class_list to "
            f"use a file as given"
        )
    return data
