import datetime
import math
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit

from sslterm.errors import ProfileError
from sslterm.profile.edit import schema_fields
from sslterm.profile.load import (
    frozen,
    load_profile,
    parse_toml,
    resolved_toml,
    validate_data,
    validate_text,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))
FIXED_KEYS = ["data.dataset", "data.root", "model.method", "model.encoder", "simclr.temperature",
              "train.epochs", "train.batch_size", "train.seed", "probe.interval",
              "launch.num_processes", "launch.output_dir"]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_shipped_profiles_validate_and_round_trip(path):
    profile = load_profile(path)
    assert profile.name == path.stem
    again = validate_text(resolved_toml(profile), "frozen.toml")
    assert again == frozen(profile)


def test_fixed_key_names_exist():
    profile = load_profile(ROOT / "profiles/smoke.toml")
    for key in FIXED_KEYS:
        section, name = key.split(".")
        assert hasattr(getattr(profile, section), name), key


def test_overrides_positional_and_typed(tmp_path):
    p = load_profile(ROOT / "profiles/cifar10.toml",
                     ["simclr.temperature=0.2", "train.epochs=30", "data.root=/x y",
                      "augment.crop_scale=[0.2, 1.0]", "train.compile=true"])
    assert p.simclr.temperature == 0.2 and p.train.epochs == 30 and p.data.root == "/x y"
    assert p.augment.crop_scale == (0.2, 1.0) and p.train.compile is True


def write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("text", "overrides", "expected"), [
    ("[model]\ntemprature = 0.2\n", [],
     "{p}:2: model.temprature: unknown key; did you mean 'simclr.temperature'?"),
    ("[byol]\nmomentum_strat = 0.9\n", [],
     "{p}:2: byol.momentum_strat: unknown key; did you mean 'byol.momentum_start'?"),
    ("[byol]\ntemperature = 0.2\n", [],
     "{p}:2: byol.temperature: unknown key in [byol]; it belongs to [simclr] and [mocov3]"),
    ("[model]\nprojector = \"mlp\"\n[simclr]\nprojector = \"linear\"\n", [],
     "{p}:2: model.projector: is now simclr.projector, which is set too; set only simclr.projector"),
    ("[simclr]\ntemperature = 0.5\n", ["model.temperature=0.2"],
     "<command line>: model.temperature: is now simclr.temperature, which is set too; "
     "set only simclr.temperature"),
    ("[model]\nencoder = \"resnet18\"\nprojector_dim = 0\n", [],
     "{p}:3: model.projector_dim: must be >= 1 (got 0)"),
    ("", ["simclr.temperature=0"], "<command line>: simclr.temperature: must be > 0.0 (got 0)"),
    ("[train]\nepochs = 3\nbase_lr = -0.1\n", [], "{p}:3: train.base_lr: must be > 0.0 (got -0.1)"),
    ("[train]\nbatch_size = 1\n", [], "{p}:2: train.batch_size: must be >= 2 (got 1)"),
    ("[data]\ndataset = \"cifar11\"\n", [],
     "{p}:2: data.dataset: must be one of 'cifar10', 'cifar100', 'svhn', 'imagenet', "
     "'imagenet50', 'imagenet100', 'imagenet200', 'imagefolder' or 'synthetic' (got 'cifar11'); "
     "did you mean 'cifar10'?"),
    ("", ["model.method=moco"],
     "<command line>: model.method: must be one of 'simclr', 'byol', 'mocov3', 'simsiam', "
     "'barlowtwins', 'vicreg' or 'dino' (got 'moco'); did you mean 'mocov3'?"),
    ("[model]\nmethod = \"swav\"\n", [],
     "{p}:2: model.method: must be one of 'simclr', 'byol', 'mocov3', 'simsiam', "
     "'barlowtwins', 'vicreg' or 'dino' (got 'swav')"),
    ("[model\nencoder = 1\n", [], "{p}:1: TOML syntax error: Expected ']' at the end of a table declaration"),
    ("[train]\nepochs = \"ten\"\n", [],
     "{p}:2: train.epochs: must be a whole number (got 'ten')"),
    ('model = "resnet"\n', [],
     "{p}:1: model: must be a [model] table of keys, not a single value (got 'resnet')"),
    ("[train]\nepochs = 5\nwarmup_epochs = 8\n", [],
     "{p}:3: train.warmup_epochs: must be <= train.epochs = 5 (got 8)"),
    ("[train]\nwarmup_epochs = 8\n", ["train.epochs=5"],
     "<command line>: train.epochs: must be >= train.warmup_epochs = 8 (got 5); "
     "lower train.warmup_epochs too"),
    ("[train]\nepochs = 5\n", ["train.warmup_epochs=6"],
     "<command line>: train.warmup_epochs: must be <= train.epochs = 5 (got 6)"),
    ("[train]\nbatch_size = 6\n[launch]\nnum_processes = 4\n", [],
     "{p}:2: train.batch_size: must divide evenly over 4 processes (got 6)"),
    ("", ["model.temperature=0"], "<command line>: model.temperature: must be > 0.0 (got 0)"),
    ("", ["modle.temperature=0.2"],
     "<command line>: modle: unknown key; did you mean 'model'?"),
])
def test_error_messages(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(path, overrides)
    assert str(info.value) == expected.format(p=path)


def test_cli_bad_profile_one_line_exit_2(tmp_path):
    path = write(tmp_path, "[train]\nwarmup_epochs = -1\n")
    out = subprocess.run([sys.executable, "-m", "sslterm", "profile", "validate", path],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == f"sslterm: {path}:2: train.warmup_epochs: must be >= 0.0 (got -1)\n"


def test_profile_show_is_complete(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sslterm", "profile", "show",
                          str(ROOT / "profiles/smoke.toml"), "--set", "train.epochs=7"],
                         capture_output=True, text=True, check=True)
    frozen = tmp_path / "frozen.toml"
    frozen.write_text(out.stdout)
    profile = load_profile(frozen)
    assert profile.train.epochs == 7 and profile.name == "smoke"
    assert "lars_trust_coefficient = 0.001" in out.stdout  # defaults written out


def test_every_field_problem_is_reported_once_and_located(tmp_path):
    text = "[model]\ntemperature = -1\n\n[train]\nbase_lr = 0\nepochs = 0\nepoch = 3\n"
    with pytest.raises(ProfileError) as info:
        validate_text(text, "p.toml", ["train.batch_size=0"])
    err = info.value
    located = [(p.path, p.line, p.key) for p in err.problems]
    assert located == [  # schema order, each at its own line
        ("p.toml", 2, "model.temperature"),
        ("p.toml", 6, "train.epochs"),
        ("<command line>", None, "train.batch_size"),
        ("p.toml", 5, "train.base_lr"),
        ("p.toml", 7, "train.epoch"),
    ]
    assert str(err) == f"{err.path}:{err.line}: {err.key}: {err.message}"  # one line


def test_errors_of_a_temporary_copy_are_named_after_the_edited_file():
    with pytest.raises(ProfileError) as info:
        validate_text("[train]\nepochs = 0\nbase_lr = 0\n", "/tmp/sslterm-launch-x/p.toml")
    shown = info.value.with_path("profiles/p.toml")
    assert [str(p) for p in shown.problems] == [
        "profiles/p.toml:2: train.epochs: must be >= 1 (got 0)",
        "profiles/p.toml:3: train.base_lr: must be > 0.0 (got 0)",
    ]


PYDANTIC_WORDING = ("Input should", "should have", "should match", "Field required",
                    "Value error", "Tuple", "dictionary", "instance of", "Extra inputs")
WRONG_VALUES = ["text", "", 0.5, -1, 10**6, math.inf, math.nan, True, [1, 2, 3], [1],
                ["a", "b"], {"a": 1}, datetime.date(1979, 5, 27), datetime.time(7, 32),
                [{"a": 1}], "../x" * 30]


@pytest.mark.parametrize("key", [f.key for f in schema_fields()])
def test_no_pydantic_wording_reaches_the_user(key):
    """Every wrong type, range or shape a TOML file can give any key reads as plain words."""
    section, _, leaf = key.rpartition(".")
    for value in WRONG_VALUES:
        data = {section: {leaf: value}} if section else {leaf: value}
        text = tomlkit.dumps(data)
        try:
            validate_data(parse_toml(text, "p.toml"), "p.toml", text)
        except ProfileError as err:
            for problem in err.problems:
                assert not any(w in problem.message for w in PYDANTIC_WORDING), str(problem)
                assert problem.key, str(problem)
                assert problem.key != key or problem.line is not None, str(problem)


@pytest.mark.parametrize("section", ["data", "augment", "model", "simclr", "byol", "mocov3",
                                     "simsiam", "train", "probe", "launch"])
def test_a_section_given_a_value_is_explained(section):
    for literal, words in (("5", "not a single value (got 5)"),
                           ('"x"', "not a single value (got 'x')")):
        with pytest.raises(ProfileError) as info:
            validate_text(f"{section} = {literal}\n", "p.toml")
        assert str(info.value) == f"p.toml:1: {section}: must be a [{section}] table of keys, {words}"


def test_default_warmup_shrinks_to_a_short_run_and_the_frozen_profile_keeps_it():
    profile = validate_text("[train]\nepochs = 4\n", "short.toml")
    assert profile.train.warmup_epochs == 4.0
    again = validate_text(resolved_toml(profile), "frozen.toml")
    assert again.train.warmup_epochs == 4.0
    with pytest.raises(ProfileError, match="<command line>: train.epochs: must be >= "):
        validate_text(resolved_toml(profile), "frozen.toml", ["train.epochs=3"])


# -- method sections ------------------------------------------------------------------------
def test_schema_method_names_are_the_registered_methods():
    import typing

    import sslterm.methods  # noqa: F401  (registers the built-in methods; torch-side)
    from sslterm.methods.registry import METHODS
    from sslterm.profile.schema import METHOD_SECTIONS, MethodName, Profile

    assert set(typing.get_args(MethodName)) == set(METHODS) == set(METHOD_SECTIONS)
    assert all(name in Profile.model_fields for name in METHOD_SECTIONS)


@pytest.mark.parametrize(("method", "section"), [
    ("simclr", {"temperature": 0.5, "projector": "mlp", "projector_hidden_dim": 64,
                "projector_dim": 32}),
    ("byol", {"projector_hidden_dim": 64, "projector_dim": 32, "predictor_hidden_dim": 64,
              "momentum_start": 0.99, "momentum_end": 1.0}),
    ("mocov3", {"projector_hidden_dim": 64, "projector_dim": 32, "projector_layers": 2,
                "predictor_hidden_dim": 64, "temperature": 0.2, "momentum_start": 0.99,
                "momentum_end": 1.0}),
    ("simsiam", {"projector_hidden_dim": 64, "projector_dim": 32, "predictor_hidden_dim": 16,
                 "predictor_fixed_lr": True}),
    ("barlowtwins", {"projector_hidden_dim": 64, "projector_dim": 32, "lambda_offdiag": 0.0051,
                     "scale_loss": 0.1}),
    ("vicreg", {"projector_hidden_dim": 64, "projector_dim": 32, "invariance_weight": 25.0,
                "variance_weight": 25.0, "covariance_weight": 1.0, "variance_sum": False}),
    ("dino", {"projector_hidden_dim": 64, "head_layers": 3, "bottleneck_dim": 32, "output_dim": 64,
              "norm_last_layer": True, "head_batch_norm": False, "freeze_last_layer_epochs": 1,
              "student_temp": 0.1, "teacher_temp": 0.07, "warmup_teacher_temp": 0.04, "warmup_teacher_temp_epochs": 2,
              "center_momentum": 0.9, "momentum_start": 0.996, "momentum_end": 1.0,
              "local_crops": 2, "local_size": 16, "local_scale": (0.05, 0.4),
              "global_scale": (0.4, 1.0)}),
])
def test_method_config_is_the_chosen_methods_section_and_smoke_keeps_all_small(method, section):
    profile = load_profile(ROOT / "profiles/smoke.toml", [f"model.method={method}"])
    assert profile.method_config() is getattr(profile, method)
    assert profile.method_config().model_dump() == section


OLD_STYLE = """\
# a run directory's profile.toml from before the method sections
[model]
method = "simclr"
encoder = "resnet18"
projector = "linear"  # a linear head
projector_hidden_dim = 128
projector_dim = 32
temperature = 0.3

[train]
epochs = 4
"""


def test_old_style_profile_loads_and_freezes_to_the_new_form():
    profile = validate_text(OLD_STYLE, "profile.toml")
    assert profile.method_config().model_dump() == {
        "temperature": 0.3, "projector": "linear", "projector_hidden_dim": 128, "projector_dim": 32}
    text = resolved_toml(profile)
    doc = tomlkit.parse(text).unwrap()
    assert "temperature" not in doc["model"] and "projector" not in doc["model"]
    assert doc["simclr"] == profile.simclr.model_dump()
    assert text.index("[model]") < text.index("[simclr]") < text.index("[train]")
    assert validate_text(text, "frozen.toml") == frozen(profile)


def test_frozen_profile_writes_the_chosen_method_fully_and_others_as_set():
    """A sweep over model.method from one file keeps each method's own settings."""
    text = "[model]\nmethod = \"byol\"\n\n[simclr]\ntemperature = 0.3\n\n" \
           "[byol]\nmomentum_start = 0.996\n\n[mocov3]\n"
    doc = tomlkit.parse(resolved_toml(validate_text(text, "sweep.toml"))).unwrap()
    assert doc["byol"] == {"projector_hidden_dim": 4096, "projector_dim": 256,
                           "predictor_hidden_dim": 4096, "momentum_start": 0.996,
                           "momentum_end": 1.0}
    assert doc["simclr"] == {"temperature": 0.3}
    assert "mocov3" not in doc and "simsiam" not in doc
    frozen_text = tomlkit.dumps(doc)
    again = validate_text(frozen_text, "frozen.toml", ["model.method=simclr"])
    assert again.method_config().temperature == 0.3
    assert validate_text(frozen_text, "frozen.toml").byol.momentum_start == 0.996


def test_another_methods_section_is_accepted_and_validated():
    profile = validate_text("[mocov3]\ntemperature = 0.5\n", "p.toml")
    assert profile.model.method == "simclr" and profile.mocov3.temperature == 0.5
    with pytest.raises(ProfileError, match=r"p.toml:2: mocov3.temperature: must be > 0.0"):
        validate_text("[mocov3]\ntemperature = 0\n", "p.toml")
