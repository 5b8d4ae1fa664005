"""Features export: exact round trip, readable without sslterm, atomic, clear errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sslterm.errors import UserError
from sslterm.eval import export
from sslterm.eval.export import load_features, save_features
from sslterm.eval.features import extract_features

pytestmark = pytest.mark.usefixtures("one_thread")


def make_splits(seed=0, dim=6, names=("train", "val", "test")):
    g = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn(5 + i, dim, generator=g), torch.randint(0, 3, (5 + i,), generator=g))
        for i, name in enumerate(names)
    }


META = {"dataset": "cifar10", "encoder": "resnet18", "small_stem": True, "num_classes": 10}


def test_round_trip_is_bit_exact(tmp_path):
    splits = make_splits()
    out = save_features(tmp_path / "features", splits, META)
    loaded, meta = load_features(out)
    assert list(loaded) == ["train", "val", "test"]
    for name, (features, labels) in splits.items():
        assert torch.equal(loaded[name][0], features)
        assert torch.equal(loaded[name][1], labels)
        assert loaded[name][0].dtype == torch.float32 and loaded[name][1].dtype == torch.int64
    assert meta["num_classes"] == 10 and meta["feature_dim"] == 6
    assert meta["splits"] == {"train": 5, "val": 6, "test": 7}
    assert meta["dataset"] == "cifar10" and meta["small_stem"] is True


def test_readable_with_plain_safetensors_and_json(tmp_path):
    splits = make_splits(names=("train", "test"))
    save_features(tmp_path / "f", splits, {"dataset": "svhn"})
    tensors = load_file(tmp_path / "f" / "features.safetensors")
    assert set(tensors) == {"train_features", "train_labels", "test_features", "test_labels"}
    assert torch.equal(tensors["test_features"], splits["test"][0])
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["format"] == "sslterm-features" and meta["version"] == 1
    assert meta["protocol"] == "frozen encoder, eval mode, un-augmented images"
    assert meta["num_classes"] == 1 + max(int(labels.max()) for _, labels in splits.values())
    assert not (tmp_path / "f" / "encoder.safetensors").exists()


def small_stem_resnet18() -> nn.Module:
    model = timm.create_model("resnet18", num_classes=0)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


@pytest.mark.parametrize("small_stem", [False, True])
def test_exported_timm_encoder_reproduces_the_features(tmp_path, small_stem):
    torch.manual_seed(0)
    build = (
        small_stem_resnet18 if small_stem else lambda: timm.create_model("resnet18", num_classes=0)
    )
    encoder = build()
    encoder.train()
    with torch.no_grad():  # move BN running stats away from their defaults
        encoder(torch.randn(8, 3, 16, 16))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0, 1, 2]))]
    features, labels = extract_features(encoder, data, "cpu")
    save_features(tmp_path / "f", {"train": (features, labels)}, META, encoder.state_dict())

    torch.manual_seed(123)  # a different random init that the weights must overwrite
    fresh = build()
    fresh.load_state_dict(load_file(tmp_path / "f" / "encoder.safetensors"))
    again, _ = extract_features(fresh, data, "cpu")
    assert torch.equal(again, features)
    assert torch.equal(load_features(tmp_path / "f")[0]["train"][0], features)


def test_failed_write_leaves_the_previous_export_intact(tmp_path, monkeypatch):
    target = tmp_path / "f"
    old = make_splits(seed=0)
    save_features(target, old, META, {"w": torch.ones(2)})

    calls = []

    def failing_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # features written, encoder write fails
            raise OSError("disk full")
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(export, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_features(target, make_splits(seed=1), META, {"w": torch.zeros(2)})
    loaded, _ = load_features(target)
    assert torch.equal(loaded["train"][0], old["train"][0])
    assert torch.equal(load_file(target / "encoder.safetensors")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temp leftovers


def test_failed_swap_restores_the_previous_export(tmp_path, monkeypatch):
    target = tmp_path / "f"
    old = make_splits(seed=0)
    save_features(target, old, META)
    real_rename = export.os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(export.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        save_features(target, make_splits(seed=1), META)
    monkeypatch.undo()
    assert torch.equal(load_features(target)[0]["train"][0], old["train"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def failing_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", failing_save_file)
    with pytest.raises(OSError):
        save_features(tmp_path / "f", make_splits(), META)
    assert list(tmp_path.iterdir()) == []


def test_overwrites_an_earlier_export_but_never_another_folder(tmp_path):
    save_features(tmp_path / "f", make_splits(seed=0), META)
    save_features(tmp_path / "f", make_splits(seed=1), META)
    assert torch.equal(
        load_features(tmp_path / "f")[0]["train"][0], make_splits(seed=1)["train"][0]
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="refusing"):
        save_features(tmp_path / "docs", make_splits(), META)
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_loads_a_bare_file_made_elsewhere(tmp_path):
    file = tmp_path / "cifar_feats.safetensors"
    save_file(
        {
            "train_features": torch.randn(4, 3, dtype=torch.float16),
            "train_labels": torch.tensor([0, 4, 1, 2], dtype=torch.int32),
            "test_features": torch.randn(2, 3, dtype=torch.float16),
            "test_labels": torch.tensor([3, 0], dtype=torch.int32),
            "something_else": torch.zeros(1),
        },
        file,
    )
    splits, meta = load_features(file)
    assert list(splits) == ["train", "test"]
    assert splits["train"][0].dtype == torch.float32 and splits["test"][1].dtype == torch.int64
    assert meta["num_classes"] == 5 and meta["feature_dim"] == 3


def write(tmp_path, tensors):
    file = tmp_path / "x.safetensors"
    save_file(tensors, file)
    return file


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {"test_features": torch.zeros(2, 3), "test_labels": torch.zeros(2, dtype=torch.long)},
            "no train split",
        ),
        ({"train_features": torch.zeros(2, 3)}, "needs both"),
        (
            {"train_features": torch.zeros(2, 3), "train_labels": torch.zeros(3, dtype=torch.long)},
            "2 features and 3 labels",
        ),
        (
            {
                "train_features": torch.zeros(2, 3, 1),
                "train_labels": torch.zeros(2, dtype=torch.long),
            },
            r"float \[N, D\]",
        ),
        ({"train_features": torch.zeros(2, 3), "train_labels": torch.zeros(2)}, "integer"),
        (
            {
                "train_features": torch.zeros(2, 3),
                "train_labels": torch.zeros(2, dtype=torch.long),
                "val_features": torch.zeros(2, 4),
                "val_labels": torch.zeros(2, dtype=torch.long),
            },
            "disagree",
        ),
        (
            {
                "train_features": torch.full((2, 3), float("nan")),
                "train_labels": torch.zeros(2, dtype=torch.long),
            },
            "NaN",
        ),
        (
            {"train_features": torch.zeros(2, 3), "train_labels": torch.tensor([0, -1])},
            "labels span",
        ),
    ],
)

def test_bad_files_give_a_user_error(tmp_path, tensors, message):
    with pytest.raises(UserError, match=message):
        load_features(write(tmp_path, tensors))


def test_missing_broken_and_mismatched_exports_give_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such features file"):
        load_features(tmp_path / "nope")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_features(tmp_path / "broken.safetensors")
    save_features(tmp_path / "f", make_splits(), META)
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    (tmp_path / "f" / "meta.json").write_text(json.dumps({**meta, "num_classes": 2}))
    with pytest.raises(UserError, match="num_classes 2"):
        load_features(tmp_path / "f")
    (tmp_path / "f" / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable metadata"):
        load_features(tmp_path / "f")


def test_save_rejects_inconsistent_splits(tmp_path):
    splits = make_splits()
    with pytest.raises(ValueError, match="train"):
        save_features(tmp_path / "f", {"test": splits["test"]}, META)
    with pytest.raises(ValueError, match="dim"):
        save_features(tmp_path / "f", {**splits, "val": (torch.zeros(2, 9), torch.zeros(2))}, META)
    with pytest.raises(ValueError, match="num_classes"):
        save_features(tmp_path / "f", splits, {"num_classes": 2})
    assert not (tmp_path / "f").exists()
