"""sslterm views: the grid of the views a profile's method trains on, by the real data path,
and the composer's preview of it."""

from __future__ import annotations

import numpy as np
import pytest
from fakedata import write_image_folder
from PIL import Image
from runhelpers import SMOKE, sslterm

from sslterm.commands.views import GAP, view_grid
from sslterm.profile.load import load_profile


def cells(path, rows: int, cell: int) -> int:
    """Columns of cells in a grid PNG of ``rows`` rows of ``cell`` px cells."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        width, height = image.size
    assert height == rows * (cell + GAP) + GAP
    return (width - GAP) // (cell + GAP)


def test_views_writes_one_column_per_view_multicrop_included(tmp_path):
    out = sslterm("views", str(SMOKE), "model.method=dino", "--images", "3", "--out",
                  str(tmp_path / "dino.png"), cwd=tmp_path, check=True)
    assert "3 images x 4 views" in out.stdout and "2 x 16 px" in out.stdout
    assert cells(tmp_path / "dino.png", 3, 32) == 4  # 2 global + the smoke profile's 2 local
    sslterm("views", str(SMOKE), "--images", "2", "--out", str(tmp_path / "simclr.png"),
            cwd=tmp_path, check=True)
    assert cells(tmp_path / "simclr.png", 2, 32) == 2


def test_each_view_shows_its_own_recipe():
    """Per-view recipes reach the grid: view 2 always grey, view 1 never (by the batched path
    on the smoke profile's tensor cache)."""
    p = load_profile(SMOKE, ["augment.views.grayscale_p=[0.0, 1.0]", "augment.color_p=0"])
    grid = view_grid(p, images=4)
    assert "grayscale_p 1" in grid.plan
    cell = 32 + GAP
    for row in range(4):
        top = GAP + row * cell
        first = grid.pixels[top:top + 32, GAP:GAP + 32].astype(int)
        second = grid.pixels[top:top + 32, GAP + cell:GAP + cell + 32].astype(int)
        assert np.ptp(second, axis=2).max() <= 1  # grey: the channels agree
        assert np.ptp(first, axis=2).max() > 10


def test_large_images_take_the_per_sample_path(tmp_path):
    write_image_folder(tmp_path / "folder", n_train=3, size=96, fmt="jpg")
    p = load_profile(SMOKE, ["data.dataset=imagefolder", f"data.root={tmp_path / 'folder'}",
                             "data.image_size=64", "data.download=false"])
    grid = view_grid(p, images=2)
    assert grid.pixels.shape == (2 * (64 + GAP) + GAP, 2 * (64 + GAP) + GAP, 3)


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "grid.jpg"], "name a .png file"),
    (["--images", "0", "--out", "grid.png"], "--images must be at least 1"),
    (["train.epochs=0", "--out", "grid.png"], "train.epochs"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    out = sslterm("views", str(SMOKE), *args, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not list(tmp_path.glob("grid.*"))
