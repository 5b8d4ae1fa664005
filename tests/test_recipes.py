"""Every shipped solo-learn profile resolves to solo-learn's values (tests/solo_learn.py).

The expected values are derived from solo-learn's own keys here, one mapping per key, so a
profile that drifts from the YAML (a value, a per-view recipe, a default solo-learn relies
on) fails with the key named; the controls show that a changed value is caught.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from solo_learn import AUGMENTATIONS, PROFILES

from sslterm.profile.load import load_profile
from sslterm.profile.schema import Profile

ROOT = Path(__file__).resolve().parents[1]
HEADS = {  # solo-learn method_kwargs -> sslterm keys of the method's section
    "simclr": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "projector_dim",
               "temperature": "temperature"},
    "byol": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "projector_dim",
             "pred_hidden_dim": "predictor_hidden_dim"},
    "mocov3": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "projector_dim",
               "pred_hidden_dim": "predictor_hidden_dim", "temperature": "temperature"},
    "simsiam": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "projector_dim",
                "pred_hidden_dim": "predictor_hidden_dim"},
    "barlowtwins": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "projector_dim",
                    "scale_loss": "scale_loss", "lamb": "lambda_offdiag"},
    "vicreg": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "projector_dim",
               "sim_loss_weight": "invariance_weight", "var_loss_weight": "variance_weight",
               "cov_loss_weight": "covariance_weight"},
    "dino": {"proj_hidden_dim": "projector_hidden_dim", "proj_output_dim": "bottleneck_dim",
             "num_prototypes": "output_dim", "clip_grad": None, "freeze_last_layer":
             "freeze_last_layer_epochs", "norm_last_layer": "norm_last_layer",
             "use_bn_in_head": "head_batch_norm", "num_layers": "head_layers",
             "student_temperature": "student_temp", "teacher_temperature": "teacher_temp",
             "warmup_teacher_temperature": "warmup_teacher_temp",
             "warmup_teacher_temperature_epochs": "warmup_teacher_temp_epochs"},
}
# what solo-learn's own code fixes for a method, beyond its YAML keys
FIXED = {
    "simclr": {"simclr.projector": "mlp_bn"},  # Linear-BN-ReLU-Linear (solo/methods/simclr.py)
    "mocov3": {"mocov3.projector_layers": 2},  # the ResNet projector (solo/methods/mocov3.py)
    "simsiam": {"simsiam.predictor_fixed_lr": True},  # static_lr (solo/methods/simsiam.py)
    "vicreg": {"vicreg.variance_sum": True},  # variance_loss sums the views (solo/losses/vicreg.py)
}


def expected(dataset: str, r: dict[str, Any]) -> dict[str, Any]:
    """solo-learn's recipe as sslterm's dotted keys."""
    opt = r["optimizer"]
    method = "barlowtwins" if r["method"] == "barlow_twins" else r["method"]
    out: dict[str, Any] = {
        "data.dataset": dataset, "data.val_fraction": 0.0,  # all training images; val = test
        "model.method": method, "model.encoder": r["backbone"],
        "model.sync_batchnorm": r["sync_batchnorm"],
        "train.epochs": r["max_epochs"], "train.precision": {16: "fp16"}[r["precision"]],
        "train.optimizer": opt["name"], "train.batch_size": opt["batch_size"] * r["devices"],
        "train.base_lr": opt["lr"], "train.lr_scaling": "linear",  # lr * B / 256
        "train.weight_decay": opt["weight_decay"], "train.momentum": 0.9,
        "train.warmup_epochs": r["scheduler"]["warmup_epochs"],
        "train.min_lr_ratio": r["scheduler"]["min_lr"], **FIXED.get(method, {}),
    }
    if opt["name"] == "lars":
        out.update({"train.lars_trust_coefficient": opt["eta"],
                    "train.lars_clip_lr": opt["clip_lr"]})
    for key, value in r["method_kwargs"].items():
        ours = HEADS[method][key]
        out[f"{method}.{ours}" if ours else "train.grad_clip"] = value
    if r["momentum"] is not None:
        out[f"{method}.momentum_start"], out[f"{method}.momentum_end"] = r["momentum"]
    if method == "dino":
        out["dino.local_crops"] = 0  # solo-learn's CIFAR and ImageNet-100 DINO: two views
    return out


def resolved(p: Profile, key: str) -> Any:
    section, _, leaf = key.partition(".")
    value = getattr(getattr(p, section), leaf)
    return list(value) if isinstance(value, tuple) else value


def view_recipe(p: Profile, i: int) -> dict[str, Any]:
    """View ``i`` as the profile makes it, in solo-learn's words."""
    a = p.augment.for_view(i)
    lo, hi = p.dino.global_scale if p.model.method == "dino" else a.crop_scale
    size = p.data.image_size or 32
    return {"crop_min_scale": lo, "crop_max_scale": hi, "brightness": a.brightness,
            "contrast": a.contrast, "saturation": a.saturation, "hue": a.hue,
            "color_jitter_prob": a.color_p, "grayscale_prob": a.grayscale_p,
            "gaussian_blur_prob": a.blur_p if a.blur else 0.0,
            "solarization_prob": a.solarize_p, "horizontal_flip_prob": a.flip_p,
            "crop_size": size}


def mismatches(p: Profile, dataset: str, r: dict[str, Any]) -> list[str]:
    wrong = [f"{k} = {resolved(p, k)!r}, solo-learn {v!r}"
             for k, v in expected(dataset, r).items() if resolved(p, k) != v]
    source, views = AUGMENTATIONS[r["augmentations"]]
    if p.view_count() != len(views):
        wrong.append(f"{p.view_count()} views, {source} makes {len(views)}")
    for i, solo in enumerate(views):
        ours = view_recipe(p, i)
        wrong += [f"view {i}: {k} = {ours[k]!r}, {source} {v!r}"
                  for k, v in solo.items() if ours[k] != pytest.approx(v)]
    if not p.augment.crop or p.augment.solarize_threshold != 0.5:  # PIL's 128 of 255
        wrong.append("augment.crop / solarize_threshold differ from solo-learn's pipeline")
    return wrong


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_is_solo_learns_recipe_value_for_value(name: str) -> None:
    dataset, r = PROFILES[name]
    assert mismatches(load_profile(ROOT / "profiles" / name), dataset, r) == []


@pytest.mark.parametrize(("override", "named"), [
    ("train.base_lr=0.5", "train.base_lr"),
    ("byol.predictor_hidden_dim=512", "byol.predictor_hidden_dim"),
    ("augment.views.solarize_p=[0.0, 0.1]", "solarization_prob"),
    ("augment.saturation=0.4", "saturation"),
    ("data.val_fraction=0.1", "data.val_fraction"),
])
def test_a_changed_value_is_caught(override: str, named: str) -> None:
    dataset, r = PROFILES["cifar10-byol.toml"]
    p = load_profile(ROOT / "profiles/cifar10-byol.toml", [override])
    found = mismatches(p, dataset, r)
    assert found and all(named in line for line in found), found


def test_every_recipe_profile_says_where_it_comes_from() -> None:
    for name, (_, r) in PROFILES.items():
        text = (ROOT / "profiles" / name).read_text()
        path = r["yaml"].split("@")[0]
        assert path in text and "solo-learn" in text, name
        assert "departs" in text, f"{name}: departures are listed in the file"
