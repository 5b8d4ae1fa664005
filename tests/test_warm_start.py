"""Warm starts (``model.init_from``): a run's encoder starts from another run's weights.

The fast tests load real timm encoders from real safetensors files and check the one-line
errors; the slow one trains a source run through the CLI, warm-starts a second run from
it by run id, stops that run before its first step and exports both runs' features.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runhelpers import SMOKE, events, only_run, sslterm, state, wait_for
from safetensors.torch import load_file, save_file

from sslterm import cli
from sslterm.errors import ProfileError, UserError
from sslterm.eval.export import save_features
from sslterm.models import create_encoder
from sslterm.profile.load import load_profile
from sslterm.runs.launcher import request_stop, start_run
from sslterm.runs.store import RunDir
from sslterm.runs.warmstart import check_init_from, weights_file
from sslterm.train.model import build_model, load_init_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def encoder(name: str = "test_resnet", small_stem: str = "off", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_encoder(name, image_size=32, small_stem=small_stem)[0].eval()


def saved(tmp_path: Path, model: torch.nn.Module) -> Path:
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def test_an_encoder_file_gives_the_sources_features(tmp_path):
    source = encoder(seed=1)
    fresh = encoder(seed=2)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(fresh(images), source(images))
        assert load_init_weights(fresh, saved(tmp_path, source)) == tmp_path / "encoder.safetensors"
        assert torch.equal(fresh(images), source(images))


def test_a_checkpoint_gives_its_evaluated_encoder_and_a_teacher_starts_as_its_copy(tmp_path):
    smoke = ["model.method=byol", "train.online_probe=true"]
    source = build_model(load_profile(SMOKE, smoke), 32, 4).model
    with torch.no_grad():  # the teacher differs from the student, as after training
        for param in source.teacher.parameters():
            param.add_(1.0)
    checkpoint = tmp_path / "step-000000008"
    checkpoint.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              checkpoint / "model.safetensors")

    warm = build_model(load_profile(SMOKE, [*smoke, f"model.init_from={checkpoint}"]), 32, 4)
    assert warm.init_weights == str(checkpoint / "model.safetensors")
    want = source.eval_encoder().state_dict()
    for module in (warm.model.eval_encoder(), warm.model.teacher.encoder):
        got = module.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    later = build_model(load_profile(SMOKE, [*smoke, f"model.init_from={checkpoint}"]), 32, 4,
                        pretrained_weights=False)  # a resume: its checkpoint replaces them
    assert later.init_weights == ""


def test_an_export_of_another_encoder_is_refused_at_launch(tmp_path):
    model = encoder("test_convnext")
    features = torch.randn(8, model.num_features), torch.arange(8) % 2
    export = save_features(tmp_path / "features", {"train": features},
                           {"encoder": "test_convnext"}, model.state_dict())
    file = export / "encoder.safetensors"
    assert check_init_from(export, "test_convnext") == file
    with pytest.raises(UserError) as err:
        check_init_from(file, "test_resnet")
    assert str(err.value) == (
        f"model.init_from: {file} holds a test_convnext encoder, not model.encoder test_resnet")


def test_another_stem_names_the_first_key_that_does_not_fit(tmp_path):
    path = saved(tmp_path, encoder("resnet18", small_stem="off"))
    with pytest.raises(UserError) as err:
        load_init_weights(encoder("resnet18", small_stem="on"), path)
    assert str(err.value) == (
        f"model.init_from: {path} conv1.weight has shape [64, 3, 7, 7], the encoder needs "
        "[64, 3, 3, 3] (another model.encoder or model.small_stem?)"
    )


def test_another_encoder_names_its_first_missing_key(tmp_path):
    path = saved(tmp_path, encoder("test_convnext"))
    with pytest.raises(UserError, match=r"^model.init_from: .* has no conv1.0.weight \(another "):
        load_init_weights(encoder(), path)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "nothing", "no such run, folder or file"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "is not a .safetensors file"),
    (lambda d: (d / "checkpoints").mkdir() or d, "has no complete checkpoint and no "
                                                   "features/encoder.safetensors"),
])
def test_sources_without_weights_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message) as err:
        weights_file(make(tmp_path))
    assert "\n" not in str(err.value)


def test_a_missing_source_is_refused_before_the_run_directory_exists(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ProfileError) as err:
        start_run(SMOKE, ["model.init_from=nope"], output_dir=str(runs))
    assert str(err.value) == (
        f"<command line>: model.init_from: nope: no such file or folder, and no run 'nope' "
        f"under {runs}"
    )
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_a_warm_started_runs_first_features_are_its_sources(tmp_path, capsys):
    """The runs go through the real CLI and launcher; the exports and the refused launch,
    which start no run, are the same commands in this process (no torch import to wait for)."""
    runs = tmp_path / "runs"
    tiny = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.val_interval=0",
            "probe.enabled=false"]
    sslterm("-o", str(runs), "run", str(SMOKE), *tiny, cwd=tmp_path, check=True)
    source = only_run(runs)
    assert cli.main(["-o", str(runs), "features", source.name]) == 0
    capsys.readouterr()
    other = cli.main(["-o", str(runs), "run", str(SMOKE), *tiny, "model.encoder=test_convnext",
                      f"model.init_from={source.name}"])
    assert (other, capsys.readouterr().err) == (2, (
        f"sslterm: <command line>: model.init_from: {weights_file(source.resolve())} holds a "
        "test_resnet encoder, not model.encoder test_convnext\n"))

    out = sslterm("-o", str(runs), "run", str(SMOKE), *tiny, f"model.init_from={source.name}",
                  "--detach", cwd=tmp_path, check=True)
    warm = runs / out.stdout.split()[-1]
    wait_for(lambda: state(warm) == "running", "the warm run to start", warm)
    request_stop(RunDir(warm))  # long before the trainer is up: it stops before a step
    wait_for(lambda: state(warm) == "stopped", "the warm run to stop", warm)

    kinds = {e["kind"]: e for e in events(warm)}
    assert kinds["run_stopped"]["step"] == 0, "the stop came after a training step"
    started = kinds["run_started"]
    assert started["init_from"] == str(source.resolve())
    assert started["init_weights"].startswith(str(source.resolve() / "checkpoints"))
    frozen = (warm / "profile.toml").read_text()
    assert f'init_from = "{source.resolve()}"' in frozen

    assert cli.main(["-o", str(runs), "features", warm.name]) == 0
    theirs = load_file(source / "features" / "features.safetensors")
    ours = load_file(warm / "features" / "features.safetensors")
    assert theirs.keys() == ours.keys()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert json.loads((warm / "features" / "meta.json").read_text())["encoder"] == "test_resnet"
