"""solo-learn's published pretraining recipes, transcribed value for value, in its own words.

Source: github.com/vturrisi/solo-learn (the issue names commit 9187ea3; each file below was
read at the commit given beside it, the newest the reference index holds). A recipe is a
method YAML (``scripts/pretrain/<set>/<method>.yaml``) with its augmentation YAML; keys a
YAML leaves out take the defaults of ``solo/methods/base.py`` (c980e9e3: warmup_cosine with
10 warmup epochs, min_lr 0, scaler by step) and of the method's module (DINO:
``solo/methods/dino.py`` e3841843). solo-learn scales ``lr`` by
``batch_size * devices / 256`` (``solo/args/pretrain.py``).

``tests/test_recipes.py`` checks that each shipped profile resolves to these values.
"""

from __future__ import annotations

from typing import Any


def view(min_scale: float, brightness: float, contrast: float, saturation: float, hue: float,
         blur: float, solarization: float, size: int, *, color_prob: float = 0.8,
         grayscale: float = 0.2, flip: float = 0.5, max_scale: float = 1.0) -> dict[str, Any]:
    """One pipeline of an augmentation YAML (its ``num_crops`` views alike)."""
    return {"crop_min_scale": min_scale, "crop_max_scale": max_scale,
            "brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue,
            "color_jitter_prob": color_prob, "grayscale_prob": grayscale,
            "gaussian_blur_prob": blur, "solarization_prob": solarization,
            "horizontal_flip_prob": flip, "crop_size": size}


# name: (path@commit, the views in order)
AUGMENTATIONS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "cifar/asymmetric": ("scripts/pretrain/cifar/augmentations/asymmetric.yaml@24322891", [
        view(0.08, 0.4, 0.4, 0.2, 0.1, blur=0.0, solarization=0.0, size=32),
        view(0.08, 0.4, 0.4, 0.2, 0.1, blur=0.0, solarization=0.2, size=32)]),
    "cifar/symmetric": ("scripts/pretrain/cifar/augmentations/symmetric.yaml@8676d223",
                        [view(0.08, 0.8, 0.8, 0.8, 0.2, blur=0.5, solarization=0.0, size=32)] * 2),
    "cifar/symmetric_weak": ("scripts/pretrain/cifar/augmentations/symmetric_weak.yaml@24322891",
                             [view(0.08, 0.4, 0.4, 0.4, 0.1, blur=0.5, solarization=0.0, size=32)] * 2),
    "cifar/vicreg": ("scripts/pretrain/cifar/vicreg.yaml@1df0b89d (inline augmentations)",
                     [view(0.2, 0.4, 0.4, 0.2, 0.1, blur=0.0, solarization=0.1, size=32)] * 2),
    "imagenet-100/asymmetric": ("scripts/pretrain/imagenet-100/augmentations/asymmetric.yaml@6f228fd0", [
        view(0.08, 0.4, 0.4, 0.2, 0.1, blur=1.0, solarization=0.0, size=224),
        view(0.08, 0.4, 0.4, 0.2, 0.1, blur=0.1, solarization=0.2, size=224)]),
    "imagenet-100/symmetric": ("scripts/pretrain/imagenet-100/augmentations/symmetric.yaml@6f228fd0",
                               [view(0.08, 0.8, 0.8, 0.8, 0.2, blur=0.5, solarization=0.0, size=224)] * 2),
    "imagenet-100/vicreg": ("scripts/pretrain/imagenet-100/augmentations/vicreg.yaml@4d64ac0d",
                            [view(0.2, 0.4, 0.4, 0.2, 0.1, blur=0.5, solarization=0.1, size=224)] * 2),
}

LARS = {"name": "lars", "eta": 0.02, "clip_lr": True, "exclude_bias_n_norm": True}
DINO_DEFAULTS = {"clip_grad": 0.0, "freeze_last_layer": 1, "norm_last_layer": True,
                 "use_bn_in_head": False, "num_layers": 3, "student_temperature": 0.1,
                 "teacher_temperature": 0.07, "warmup_teacher_temperature": 0.04,
                 "warmup_teacher_temperature_epochs": 0}


def recipe(yaml: str, method: str, kwargs: dict[str, Any], optimizer: dict[str, Any],
           augmentations: str, *, epochs: int, devices: int = 1,
           momentum: tuple[float, float] | None = None) -> dict[str, Any]:
    return {"yaml": yaml, "method": method, "backbone": "resnet18", "method_kwargs": kwargs,
            "momentum": momentum, "optimizer": optimizer, "augmentations": augmentations,
            "max_epochs": epochs, "devices": devices, "sync_batchnorm": True, "precision": 16,
            "scheduler": {"name": "warmup_cosine", "warmup_epochs": 10, "min_lr": 0.0}}


CIFAR = {
    "simclr": recipe("scripts/pretrain/cifar/simclr.yaml@07f8c3bb", "simclr",
                     {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2},
                     {**LARS, "batch_size": 256, "lr": 0.4, "weight_decay": 1e-4},
                     "cifar/symmetric", epochs=1000),
    "byol": recipe("scripts/pretrain/cifar/byol.yaml@4d64ac0d", "byol",
                   {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096},
                   {**LARS, "batch_size": 256, "lr": 1.0, "weight_decay": 1e-5},
                   "cifar/asymmetric", epochs=1000, momentum=(0.99, 1.0)),
    "mocov3": recipe("scripts/pretrain/cifar/mocov3.yaml@07f8c3bb", "mocov3",
                     {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096,
                      "temperature": 0.2},
                     {**LARS, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-6},
                     "cifar/asymmetric", epochs=1000, momentum=(0.99, 1.0)),
    "simsiam": recipe("scripts/pretrain/cifar/simsiam.yaml@3a64e558", "simsiam",
                      {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "pred_hidden_dim": 512},
                      {"name": "sgd", "batch_size": 256, "lr": 0.5, "weight_decay": 1e-5},
                      "cifar/symmetric_weak", epochs=1000),
    "barlowtwins": recipe("scripts/pretrain/cifar/barlow.yaml@07f8c3bb", "barlow_twins",
                          {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "scale_loss": 0.1,
                           "lamb": 0.0051},
                          {**LARS, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-4},
                          "cifar/asymmetric", epochs=1000),
    "vicreg": recipe("scripts/pretrain/cifar/vicreg.yaml@1df0b89d", "vicreg",
                     {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
                      "var_loss_weight": 25.0, "cov_loss_weight": 1.0},
                     {**LARS, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-4},
                     "cifar/vicreg", epochs=1000),
    "dino": recipe("scripts/pretrain/cifar/dino.yaml@07f8c3bb", "dino",
                   {"proj_hidden_dim": 2048, "proj_output_dim": 256, "num_prototypes": 4096,
                    **DINO_DEFAULTS},
                   {**LARS, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-6},
                   "cifar/asymmetric", epochs=1000, momentum=(0.9995, 1.0)),
}

IMAGENET100 = {
    "simclr": recipe("scripts/pretrain/imagenet-100/simclr.yaml@d418d09c", "simclr",
                     {"proj_hidden_dim": 4096, "proj_output_dim": 512, "temperature": 0.2},
                     {**LARS, "batch_size": 128, "lr": 0.3, "weight_decay": 1e-4},
                     "imagenet-100/symmetric", epochs=400, devices=2),
    "byol": recipe("scripts/pretrain/imagenet-100/byol.yaml@4d64ac0d", "byol",
                   {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 8192},
                   {**LARS, "batch_size": 128, "lr": 0.5, "weight_decay": 1e-6},
                   "imagenet-100/asymmetric", epochs=400, devices=2, momentum=(0.99, 1.0)),
    "mocov3": recipe("scripts/pretrain/imagenet-100/mocov3.yaml@07f8c3bb", "mocov3",
                     {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096,
                      "temperature": 0.2},
                     {**LARS, "batch_size": 128, "lr": 0.3, "weight_decay": 1e-6},
                     "imagenet-100/asymmetric", epochs=400, devices=2, momentum=(0.99, 1.0)),
    "barlowtwins": recipe("scripts/pretrain/imagenet-100/barlow.yaml@1884bd7d", "barlow_twins",
                          {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "scale_loss": 0.1,
                           "lamb": 0.0051},
                          {**LARS, "batch_size": 128, "lr": 0.3, "weight_decay": 1e-4},
                          "imagenet-100/asymmetric", epochs=400, devices=2),
    "vicreg": recipe("scripts/pretrain/imagenet-100/vicreg.yaml@07f8c3bb", "vicreg",
                     {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
                      "var_loss_weight": 25.0, "cov_loss_weight": 1.0},
                     {**LARS, "batch_size": 128, "lr": 0.3, "weight_decay": 1e-4},
                     "imagenet-100/vicreg", epochs=400, devices=2),
    "dino": recipe("scripts/pretrain/imagenet-100/dino.yaml@72c172b8", "dino",
                   {"proj_hidden_dim": 2048, "proj_output_dim": 256, "num_prototypes": 4096,
                    **DINO_DEFAULTS, "warmup_teacher_temperature_epochs": 50},
                   {**LARS, "batch_size": 128, "lr": 0.3, "weight_decay": 1e-6},
                   "imagenet-100/asymmetric", epochs=400, devices=2, momentum=(0.9995, 1.0)),
}

# profile file -> (dataset, recipe); CIFAR-100 runs the CIFAR YAMLs ("change here for cifar100")
STEM = {"barlowtwins": "barlow"}
PROFILES: dict[str, tuple[str, dict[str, Any]]] = {
    **{f"cifar10-{STEM.get(m, m)}.toml": ("cifar10", r) for m, r in CIFAR.items()},
    **{f"cifar100-{STEM.get(m, m)}.toml": ("cifar100", r) for m, r in CIFAR.items()},
    **{f"imagenet100-{STEM.get(m, m)}.toml": ("imagenet100", r) for m, r in IMAGENET100.items()},
}
