"""The one atomic writer every replaced file goes through (sslterm/files.py)."""

import os
import stat
import threading

import pytest

from sslterm.files import atomic_write_bytes, atomic_write_text


def test_replaces_the_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    path.write_text("old and longer than the new text\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["status.json"]


def test_a_new_file_gets_the_umask_an_existing_one_keeps_its_mode(tmp_path):
    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.bin"
        atomic_write_bytes(fresh, b"x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
        shared = tmp_path / "shared.toml"
        shared.write_text("a = 1\n")
        os.chmod(shared, 0o664)
        atomic_write_text(shared, "a = 2\n")
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "profile.toml"
    path.write_text("a = 1\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "text, not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "a = 1\n"
    assert os.listdir(tmp_path) == ["profile.toml"]


def test_a_symlinked_file_is_written_through_its_link(tmp_path):
    target = tmp_path / "shared" / "cifar10.toml"
    target.parent.mkdir()
    target.write_text("a = 1\n")
    link = tmp_path / "cifar10.toml"
    link.symlink_to(target)
    atomic_write_text(link, "a = 2\n")
    assert link.is_symlink()
    assert target.read_text() == "a = 2\n"
    assert sorted(os.listdir(target.parent)) == ["cifar10.toml"]


def test_concurrent_writers_of_one_file_never_share_a_temp_file(tmp_path):
    """A trainer and its supervisor both replace status.json: each write must land whole."""
    path = tmp_path / "status.json"
    payloads = [(f"{i}" * 50_000).encode() for i in range(8)]
    errors = []

    def write(data):
        try:
            for _ in range(20):
                atomic_write_bytes(path, data)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["status.json"]
