"""What the screen says is true (issue 20, items 1-3): a finished run is never read as dead,
an output folder that cannot hold runs is one line and exit 2 wherever it is given, and what
the data decides about a profile (batch size, DINO local crops) is checked before launch;
what only the trainer can find fails with exit 2 and one line, as bad input."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from fakedata import write_image_folder
from runhelpers import SMOKE, sslterm

from sslterm.runs.store import RunDir, hold_lock, new_run_dir, output_dir_problem, utc_now

# -- the state read ----------------------------------------------------------------------


def _live_run(tmp_path: Path) -> tuple[RunDir, int]:
    """A run as its supervisor leaves it mid-run: status running on this host, lock held."""
    run = new_run_dir(tmp_path, "race")
    fd = hold_lock(run)
    run.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), started=utc_now())
    return run, fd


def test_a_run_that_ends_between_the_two_reads_is_finished_not_dead(tmp_path, monkeypatch):
    """The supervisor writes 'finished' and releases the lock between the reader's status
    read and its lock check: the reader must not call that run dead."""
    run, fd = _live_run(tmp_path)
    real_is_locked = RunDir.is_locked

    def supervisor_ends_first(self: RunDir) -> bool:
        self.update_status(state="finished", exit_code=0, ended=utc_now())
        os.close(fd)  # as the supervisor does, after the final status
        return real_is_locked(self)

    monkeypatch.setattr(RunDir, "is_locked", supervisor_ends_first)
    assert run.state() == ("finished", "")


def test_a_run_whose_lock_is_free_with_an_active_status_is_failed(tmp_path):
    run, fd = _live_run(tmp_path)
    assert run.state() == ("running", "")
    os.close(fd)  # the supervisor died without writing its final status
    state, error = run.state()
    assert state == "failed" and f"trainer process {os.getpid()} died" in error


# -- output folders ----------------------------------------------------------------------


def test_output_dir_problem_tries_for_real_and_leaves_nothing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert output_dir_problem(tmp_path / "new" / "runs") is None
    assert output_dir_problem(tmp_path) is None
    assert os.listdir(tmp_path) == ["afile"]  # the probe folder is gone, nothing was made
    assert output_dir_problem(afile) == "is a file, not a folder"
    assert output_dir_problem(afile / "runs") == f"{afile} is a file, not a folder"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere the mode says
        assert "Permission denied" in output_dir_problem(locked / "runs")
    if Path("/proc").is_dir():  # permission bits say yes, the file system says no
        assert output_dir_problem("/proc/sslterm-runs") is not None


BAD_FOLDERS = ["/etc/passwd", "/etc/passwd/runs", "/proc/sslterm-runs"]


def _one_line_exit_2(out, *needles: str) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.mark.parametrize("folder", BAD_FOLDERS)
def test_a_bad_output_folder_is_one_line_in_run_sweep_runs_and_the_app(folder, tmp_path):
    profile = str(SMOKE)
    for argv in (["run", profile, "-o", folder],
                 ["-o", folder, "run", profile],
                 ["sweep", profile, "train.seed=0,1", "-o", folder],
                 ["-o", folder]):  # the app: refused before it opens
        if folder == "/proc/sslterm-runs" and argv == ["-o", folder]:
            continue  # listing a folder that does not exist is fine (no runs)
        line = _one_line_exit_2(sslterm(*argv, cwd=tmp_path, timeout=120),
                                f"output folder {folder}")
        assert line.startswith("sslterm: ")
    assert not list(tmp_path.iterdir())  # no run directory, queue or sweep record anywhere


def test_listing_runs_in_a_file_is_refused_and_a_missing_folder_is_empty(tmp_path):
    _one_line_exit_2(sslterm("runs", "-o", "/etc/passwd", cwd=tmp_path),
                     "output folder /etc/passwd: is a file, not a folder")
    out = sslterm("runs", "-o", str(tmp_path / "none"), "--json", cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, "")


def test_a_bad_launch_output_dir_is_located_by_validate_and_run(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMOKE.read_text() + '\n# later\n')
    text = bad.read_text().replace('output_dir = "./runs"', 'output_dir = "/etc/passwd"')
    bad.write_text(text)
    line_no = next(n for n, ln in enumerate(text.splitlines(), 1) if "/etc/passwd" in ln)
    for argv in (["profile", "validate", str(bad)], ["run", str(bad)]):
        _one_line_exit_2(sslterm(*argv, cwd=tmp_path),
                         f"{bad}:{line_no}: launch.output_dir: /etc/passwd: is a file, not a folder")
    _one_line_exit_2(sslterm("profile", "validate", str(SMOKE), "launch.output_dir=/proc/x",
                             cwd=tmp_path),
                     "<command line>: launch.output_dir: /proc/x: cannot create folders in /proc")


# -- what the data decides ---------------------------------------------------------------


def test_a_batch_larger_than_the_training_set_is_refused_before_launch(tmp_path):
    # smoke: 256 synthetic images, 10% held out: 230 to train on
    for argv in (["profile", "validate"], ["run"]):
        line = _one_line_exit_2(
            sslterm(*argv, str(SMOKE), "train.batch_size=240", "-o", str(tmp_path / "runs"),
                    cwd=tmp_path),
            "<command line>: train.batch_size: 240 is larger than the 230 training images",
            "26 held out by data.val_fraction")
        assert "at most 230" in line
    assert not (tmp_path / "runs").exists()
    out = sslterm("profile", "validate", str(SMOKE), "train.batch_size=230", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_dino_local_crops_larger_than_an_image_folders_images_are_refused(tmp_path):
    """With data.image_size = 0 the size is the first image's: 32 px here."""
    write_image_folder(tmp_path / "folder", n_train=4, n_test=2, size=32)
    profile = tmp_path / "dino.toml"
    profile.write_text(
        '[data]\ndataset = "imagefolder"\nroot = "folder"\nimage_size = 0\nnum_workers = 0\n\n'
        '[model]\nmethod = "dino"\nencoder = "test_resnet"\n\n'
        '[dino]\nlocal_crops = 2\nlocal_size = 64\n\n'
        '[train]\nbatch_size = 8\n')
    line = _one_line_exit_2(sslterm("profile", "validate", str(profile), cwd=tmp_path),
                            f"{profile}:13: dino.local_size: must be <= the training image "
                            "size, 32 px (got 64)")
    assert line
    ok = sslterm("profile", "validate", str(profile), "dino.local_size=16", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    # 12 images, 10% held out: 11 to train on (the same count the trainer splits)
    _one_line_exit_2(sslterm("profile", "validate", str(profile), "dino.local_size=16",
                             "train.batch_size=12", cwd=tmp_path),
                     "train.batch_size: 12 is larger than the 11 training images of imagefolder")


@pytest.mark.slow  # a real trainer process
def test_an_input_error_only_the_trainer_finds_exits_2_with_one_line(tmp_path, monkeypatch):
    """The trainer's own input errors (here: a batch the pre-flight was told to skip) end
    the foreground command like any bad input: exit 2, one line, no traceback."""
    from sslterm.runs.launcher import start_run

    monkeypatch.chdir(tmp_path)
    run = start_run(SMOKE, ["train.batch_size=240"], output_dir=str(tmp_path / "runs"), check=False)
    out = sslterm("-o", str(tmp_path / "runs"), "follow", run.id, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    failed = [ln for ln in out.stdout.splitlines() if "failed" in ln]
    assert failed == [f"run {run.id} failed: rank 0: train.batch_size 240 is larger than the "
                      "230 training images"], out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    status = json.loads((run.path / "status.json").read_text())
    assert (status["state"], status["user_error"]) == ("failed", True)


@pytest.mark.slow  # the launch's checks run in a child process that imports torch
@pytest.mark.anyio
async def test_the_composer_says_the_same_line_for_a_bad_output_folder(tmp_path, monkeypatch):
    """The app launches and queues into its output folder: a file there is the CLI's one
    line in a notification, never an exception's text."""
    from tuihelpers import notices, wait_until

    from sslterm.tui.app import SSLTermApp
    from sslterm.tui.screens.composer import ComposerScreen

    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "runs"
    afile.write_text("not a folder")
    app = SSLTermApp(str(afile), str(SMOKE.parent), poll_interval=0.25)
    expected = f"output folder {afile}: is a file, not a folder"
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await wait_until(pilot, lambda: isinstance(app.screen, ComposerScreen))
        composer = app.screen
        assert composer.open_path(SMOKE)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: expected in notices(app), timeout=240,
                         what=lambda: notices(app))
        assert not composer.launching
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: notices(app).count(expected) == 2,
                         what=lambda: notices(app))
    shown = [str(n.message) for n in app._notifications if expected in str(n.message)]
    assert all("\n" not in n and "Error" not in n for n in shown)
    assert afile.read_text() == "not a folder"
