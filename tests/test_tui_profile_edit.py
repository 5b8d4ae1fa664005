"""tomlkit editing that keeps the user's file, and the schema as form rows."""

from __future__ import annotations

import os
import stat

import pytest

from sslterm.errors import ProfileError
from sslterm.profile import edit
from sslterm.profile.schema import Profile

TEXT = """\
# my profile
name = "x"   # the name

[train]
# how long
epochs = 5 # short
weight_decay = 1e-6
"""


def test_set_value_keeps_comments_and_layout():
    doc = edit.parse_document(TEXT)
    edit.set_value(doc, "train.epochs", 7)
    edit.set_value(doc, "train.weight_decay", 1e-6)  # same value: spelling kept
    edit.set_value(doc, "simclr.temperature", 0.2)  # new table
    edit.set_value(doc, "augment.crop_scale", (0.2, 1.0))
    out = edit.dumps(doc)
    assert out.startswith(
        '# my profile\nname = "x"   # the name\n\n[train]\n# how long\nepochs = 7 # short\n'
    )
    assert "weight_decay = 1e-6\n" in out
    assert "[simclr]\ntemperature = 0.2\n" in out and "crop_scale = [0.2, 1.0]" in out
    assert edit.get_value(doc, "train.epochs") == 7
    assert edit.get_value(doc, "augment.crop_scale") == [0.2, 1.0]
    assert edit.get_value(doc, "probe.knn", "unset") == "unset"
    edit.set_value(doc, "train.epochs", None)  # back to the default
    assert "epochs" not in edit.dumps(doc) and "# how long" in edit.dumps(doc)
    edit.set_value(doc, "probe.knn", None)  # removing what is not there creates nothing
    assert "[probe]" not in edit.dumps(doc)


def test_parse_document_error_names_the_line():
    with pytest.raises(ProfileError) as err:
        edit.parse_document("a = 1\nb = \n", "p.toml")
    assert str(err.value).startswith("p.toml:2: TOML syntax error")


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("", "int", None),
        ("  ", "str", None),
        ("12", "int", 12),
        ("1e-6", "float", 1e-6),
        ("abc", "int", "abc"),  # kept as text: validation then says what was expected
        ("0.08, 1", "pair", [0.08, 1]),
        ("[0.5, 1.0]", "pair", [0.5, 1.0]),
        ("resnet18", "str", "resnet18"),
        ("svhn", "choice", "svhn"),
        ("true", "bool", True),
    ],
)
def test_parse_input(text, kind, value):
    assert edit.parse_input(text, kind) == value


def test_format_value_round_trips():
    for value, kind in (((0.08, 1.0), "pair"), (3, "int"), (0.5, "float"), ("a b", "str")):
        parsed = edit.parse_input(edit.format_value(value), kind)
        assert parsed == (list(value) if isinstance(value, tuple) else value)


def test_schema_fields_cover_the_whole_profile():
    specs = {s.key: s for s in edit.schema_fields()}
    def leaves(model) -> int:
        return sum(leaves(f.annotation) if hasattr(f.annotation, "model_fields") else 1
                   for f in model.model_fields.values())

    assert len(specs) == leaves(Profile)
    assert specs["augment.views.solarize_p"].kind == "list"
    assert edit.parse_input("0, 0.2", "list") == [0, 0.2]
    assert specs["data.dataset"].kind == "choice" and "svhn" in specs["data.dataset"].choices
    assert specs["train.epochs"].kind == "int" and specs["train.epochs"].limits == "≥ 1"
    assert specs["augment.crop_scale"].kind == "pair"
    assert specs["probe.knn"].kind == "bool" and specs["probe.knn"].default is True
    assert all(s.help for s in specs.values())


def test_move_legacy_keys_moves_simclr_keys_out_of_model_with_their_comments():
    doc = edit.parse_document(
        '[model]\nencoder = "resnet18"\ntemperature = 0.5  # warm\nprojector = "linear"\n'
        "\n[simclr]\nprojector_dim = 32\n"
    )
    assert edit.move_legacy_keys(doc) == ["model.temperature", "model.projector"]
    assert edit.get_value(doc, "model") == {"encoder": "resnet18"}
    assert edit.get_value(doc, "simclr") == {
        "projector_dim": 32, "temperature": 0.5, "projector": "linear"}
    assert "temperature = 0.5  # warm" in edit.dumps(doc)
    assert edit.move_legacy_keys(doc) == []


def test_move_legacy_keys_leaves_a_key_set_in_both_places_for_validation():
    text = "[model]\ntemperature = 0.5\n\n[simclr]\ntemperature = 0.2\n"
    doc = edit.parse_document(text)
    assert edit.move_legacy_keys(doc) == [] and edit.dumps(doc) == text


def test_save_document_is_atomic_and_keeps_mode(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(TEXT)
    os.chmod(path, 0o640)
    doc = edit.load_document(path)
    edit.set_value(doc, "train.epochs", 9)
    edit.save_document(doc, path)
    assert "epochs = 9 # short" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["p.toml"]  # no temp file left


def test_differing_keys():
    a = {"name": "a", "train": {"epochs": 5, "lr": 0.1}, "model": {"t": 0.1}}
    b = {"name": "b", "train": {"epochs": 5, "lr": 0.2}}
    assert edit.differing_keys([a, b]) == [
        ("model.t", [0.1, None]),
        ("name", ["a", "b"]),
        ("train.lr", [0.1, 0.2]),
    ]
    assert edit.differing_keys([a, a]) == []
