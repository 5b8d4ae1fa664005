"""A run's frozen profile.toml holds every path absolute, so the run reproduces and resumes
from any directory; relative paths (in a profile file or an override) are read from the
directory where the command runs, not from the profile file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit
from fakedata import write_image_folder
from runhelpers import SMOKE, events, only_run, sslterm, state

from sslterm import cli
from sslterm.profile.load import frozen, load_profile, path_keys
from sslterm.runs.launcher import create_run

PROFILE = """\
[data]
dataset = "imagefolder"
root = "sub"                      # from the working directory, not from cfg/
class_list = "lists/mine.txt"

[train]
batch_size = 4                    # the 5 training images of sub/

[launch]
accelerate_config = "acc.yaml"
output_dir = "runs"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with images in sub/ and the profile in cfg/p.toml."""
    work = tmp_path / "work"
    write_image_folder(work / "sub", n_train=2, n_test=1, size=8)
    (work / "cfg").mkdir()
    (work / "cfg" / "p.toml").write_text(PROFILE)
    monkeypatch.chdir(work)
    return work


def test_every_path_key_is_frozen_absolute(project: Path) -> None:
    assert path_keys() == ["data.root", "data.class_list", "model.init_from",
                           "launch.accelerate_config", "launch.output_dir"]
    run = create_run(load_profile("cfg/p.toml", ["launch.output_dir=~/../elsewhere/../runs"]))
    again = load_profile(run.profile)
    assert again.data.root == str(project / "sub")
    assert again.data.class_list == str(project / "lists" / "mine.txt")
    assert again.launch.accelerate_config == str(project / "acc.yaml")
    assert again.launch.output_dir == str(Path("~").expanduser().parent / "runs")
    assert frozen(again, "/somewhere/else") == again  # absolute paths stay as they are
    assert frozen(load_profile(SMOKE)).data.class_list == ""  # unset stays unset


def validate(path: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    """``sslterm profile validate PATH`` run in ``cwd``: (exit code, stderr)."""
    monkeypatch.chdir(cwd)
    code = cli.main(["profile", "validate", str(path)])
    return code, capsys.readouterr().err


def test_a_frozen_profile_validates_from_another_directory(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The issue: cd elsewhere, and the run's profile.toml read data.root as ../sub."""
    run = create_run(load_profile("cfg/p.toml", ["data.class_list="]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert validate(project / run.profile, elsewhere, monkeypatch, capsys) == (0, "")
    # the profile file itself is read from the working directory: from cfg/ there is no sub/
    code, err = validate(project / "cfg" / "p.toml", project / "cfg", monkeypatch, capsys)
    assert code == 2 and f"folder {project / 'cfg' / 'sub' / 'train'} not found" in err


@pytest.mark.slow
def test_resume_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on an image folder given relatively fails once, then resumes from elsewhere."""
    work = tmp_path / "work"
    write_image_folder(work / "imgs", n_train=16, n_test=4, size=16)
    quick = ["data.dataset=imagefolder", "data.root=imgs", "train.batch_size=16",
             "train.epochs=2", "train.max_steps_per_epoch=2", "train.val_interval=0",
             "probe.enabled=false"]
    monkeypatch.setenv("SSLTERM_FAULT_RAISE_AT_STEP", "3")  # after the epoch-1 checkpoint
    sslterm("-o", "runs", "run", str(SMOKE), *quick, cwd=work)
    run = only_run(work / "runs")
    assert state(run) == "failed"
    monkeypatch.delenv("SSLTERM_FAULT_RAISE_AT_STEP")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = sslterm("-o", str(work / "runs"), "resume", run.name, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert state(run) == "finished", [e for e in events(run) if e["kind"] == "run_failed"]


def old_layout(frozen_toml: str) -> str:
    """A frozen profile as sslterm wrote it before the method sections: SimCLR's keys in
    [model], no method sections."""
    doc = tomlkit.parse(frozen_toml)
    for key, item in doc.pop("simclr").items():
        doc["model"][key] = item
    for name in ("byol", "mocov3", "simsiam"):
        doc.pop(name, None)
    return tomlkit.dumps(doc)
