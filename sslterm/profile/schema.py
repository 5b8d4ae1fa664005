"""The profile schema: every knob a run has, with defaults, ranges and help text.

A profile is TOML validated by these pydantic models. Unknown keys are errors
(``extra="forbid"``), so a typo never silently falls back to a default. The
field descriptions double as help text in the TUI composer and the README.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DatasetName = Literal[
    "cifar10",
    "cifar100",
    "svhn",
    "imagenet",
    "imagenet50",
    "imagenet100",
    "imagenet200",
    "imagefolder",
    "synthetic",
]


# Marks a file or folder key: relative values are read from the directory the command runs
# in, and the frozen profile of a run holds them absolute (see ``load.frozen``).
PATH = {"path": True}


class FieldProblem(ValueError):
    """A validator error that knows which dotted key it is about (for file:line: key).

    A conflict between keys names the others in ``alternatives`` (key -> message about
    that key), so it is shown at the one the user just set on the command line.
    """

    def __init__(self, key: str, message: str, alternatives: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.alternatives = alternatives or {}


class Section(BaseModel):
    """A profile table: unknown keys, ``inf`` and ``nan`` are errors, not silent values."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


SMALL_DATASET_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "synthetic": 32}
"""The datasets' own image sizes, known without reading the data (data.image_size = 0
keeps them): the dataset builders use them, and so do the profile's checks."""


class DataConfig(Section):
    dataset: DatasetName = Field("cifar10", description="Dataset to train on.")
    root: str = Field(
        "./data",
        description="Folder that holds (or receives) the dataset files.",
        json_schema_extra=PATH,
    )
    download: bool = Field(
        True, description="Let torchvision download CIFAR/SVHN into data.root if missing."
    )
    class_list: str = Field(
        "",
        description="ImageNet subsets: a local '<wnid> <name>' class-list file instead of the "
        "SCAN list packaged with sslterm.",
        json_schema_extra=PATH,
    )
    image_size: int = Field(
        0, ge=0, le=1024, description="Training image size in pixels; 0 = the dataset's own."
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of the training set held out for SSL "
        "validation and the kNN monitor; 0 = train on all of it and monitor on the test "
        "split (as solo-learn does).",
    )
    num_workers: int = Field(16, ge=0, le=256, description="DataLoader worker processes.")
    augment: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="Where augmentation runs: batched on the device ('gpu'), per sample in "
        "DataLoader workers ('cpu'), or 'auto' (batched where the tensor cache fits).",
    )
    decode: Literal["auto", "workers", "batched"] = Field(
        "auto",
        description="Large images (ImageNet, folders of large images; not in the tensor "
        "cache): 'workers' decode and augment each image in DataLoader workers (PIL); "
        "'batched' = the workers only read the files, the main process decodes each batch "
        "on the run's device (nvJPEG on a GPU, libjpeg on a CPU run) and augments it in "
        "batch there; 'auto' = 'batched' on a GPU, 'workers' on a CPU.",
    )
    cache: bool = Field(
        True, description="Decode small-image datasets once into a uint8 tensor cache."
    )
    synthetic_size: int = Field(
        512, ge=8, description="synthetic: number of generated training images."
    )
    synthetic_classes: int = Field(4, ge=2, description="synthetic: number of classes.")


def strength_jitter(strength: float) -> tuple[float, float, float, float]:
    """SimCLR's colour-distortion strength s as ColorJitter's (brightness, contrast,
    saturation, hue) = (0.8s, 0.8s, 0.8s, 0.2s)."""
    return 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength


JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")
PER_VIEW_KEYS = ("flip_p", "color_p", *JITTER_KEYS, "grayscale_p", "blur_p", "solarize_p")
"""The [augment] keys that [augment.views] may set per view."""


def _probability(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FieldProblem(key, f"must be between 0 and 1 (got {value:g})")


def check_view_value(key: str, name: str, value: float) -> None:
    """The range of one [augment] value that may also be set per view: a probability, a
    jitter strength >= 0 (ColorJitter's), a hue shift in [0, 0.5]."""
    if name == "hue":
        if not 0.0 <= value <= 0.5:
            raise FieldProblem(key, f"must be between 0 and 0.5 (got {value:g})")
    elif name in JITTER_KEYS:
        if value < 0:
            raise FieldProblem(key, f"must be >= 0 (got {value:g})")
    else:
        _probability(key, value)


class PerViewAugment(Section):
    """Values that differ between a method's views (the asymmetric recipes of BYOL, MoCo v3
    and DINO: one view blurred, the other solarized). Each key holds one value per view, in
    the order the method makes them (DINO: the two global views, then the local ones);
    views past the list's end take its last value, and an unset key leaves every view at
    the [augment] value."""

    flip_p: list[float] = Field([], description="Horizontal flip probability per view.")
    color_p: list[float] = Field([], description="Colour-jitter probability per view.")
    brightness: list[float] = Field([], description="Brightness jitter per view.")
    contrast: list[float] = Field([], description="Contrast jitter per view.")
    saturation: list[float] = Field([], description="Saturation jitter per view.")
    hue: list[float] = Field([], description="Hue jitter per view.")
    grayscale_p: list[float] = Field([], description="Grayscale probability per view.")
    blur_p: list[float] = Field(
        [], description="Blur probability per view (augment.blur must be on).")
    solarize_p: list[float] = Field([], description="Solarization probability per view.")

    @field_validator(*PER_VIEW_KEYS, mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        """One number means that value for every view."""
        return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _ranges(self) -> PerViewAugment:
        for name in PER_VIEW_KEYS:
            for value in getattr(self, name):
                check_view_value(f"augment.views.{name}", name, value)
        return self

    def longest(self) -> int:
        """The most values any key holds: views from this index on are all alike."""
        return max((len(getattr(self, name)) for name in PER_VIEW_KEYS), default=0)


class AugmentConfig(Section):
    crop: bool = Field(True, description="Random resized crop (off for SVHN, which rotates).")
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="Crop area range.")
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="Crop aspect-ratio range.")
    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="Horizontal flip probability.")
    color_strength: float = Field(
        0.5,
        ge=0.0,
        le=2.0,
        description="Colour-distortion strength s, a shorthand for the jitter keys left "
        "unset: brightness, contrast, saturation 0.8s, hue 0.2s.",
    )
    brightness: float = Field(0.4, ge=0.0, description="Brightness jitter: factor in "
                              "[1 - b, 1 + b]; unset: 0.8 * color_strength.")
    contrast: float = Field(0.4, ge=0.0, description="Contrast jitter: factor in [1 - c, 1 + c]; "
                            "unset: 0.8 * color_strength.")
    saturation: float = Field(0.4, ge=0.0, description="Saturation jitter: factor in "
                              "[1 - s, 1 + s]; unset: 0.8 * color_strength.")
    hue: float = Field(0.1, ge=0.0, le=0.5, description="Hue jitter: shift in [-h, h] turns; "
                       "unset: 0.2 * color_strength.")
    color_p: float = Field(0.8, ge=0.0, le=1.0, description="Colour-jitter probability.")
    grayscale_p: float = Field(0.2, ge=0.0, le=1.0, description="Grayscale probability.")
    blur: bool = Field(False, description="Gaussian blur (PIL's, sigma 0.1-2).")
    blur_p: float = Field(0.5, ge=0.0, le=1.0, description="Blur probability when blur is on.")
    solarize_p: float = Field(0.0, ge=0.0, le=1.0, description="Solarization probability: "
                              "values at or above the threshold are inverted.")
    solarize_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Solarization threshold, a share of the maximum "
        "(0.5 = PIL's 128 of 255).")
    rotation_p: float = Field(0.0, ge=0.0, le=1.0, description="Random-rotation probability.")
    rotation_degrees: float = Field(30.0, ge=0.0, le=180.0, description="Max rotation angle.")
    views: PerViewAugment = Field(default_factory=PerViewAugment)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        for name in ("crop_scale", "crop_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise FieldProblem(f"augment.{name}", f"must be 0 < low <= high (got [{lo}, {hi}])")
        if self.crop_scale[1] > 1.0:
            raise FieldProblem("augment.crop_scale", "high end must be <= 1")
        if self.views.blur_p and not self.blur:
            raise FieldProblem("augment.views.blur_p", "needs augment.blur = true",
                               {"augment.blur": "must be true where augment.views.blur_p is set"})
        return self

    @model_validator(mode="after")
    def _strength(self) -> AugmentConfig:
        """The jitter keys left unset follow ``color_strength`` (no re-validation loop)."""
        for name, value in zip(JITTER_KEYS, strength_jitter(self.color_strength), strict=True):
            if name not in self.model_fields_set:
                self.__dict__[name] = value
        return self

    @property
    def jitter(self) -> tuple[float, float, float, float]:
        """ColorJitter's (brightness, contrast, saturation, hue) of this recipe."""
        return self.brightness, self.contrast, self.saturation, self.hue

    def jitters(self) -> bool:
        return self.color_p > 0 and any(v > 0 for v in self.jitter)

    def view_lines(self, views: int) -> list[str]:
        """Each of ``views`` views' [augment.views] values in words, e.g.
        ``view 2: blur_p 0.1, solarize_p 0.2`` (none when no key is set per view)."""
        keys = [name for name in PER_VIEW_KEYS if getattr(self.views, name)]
        if not keys:
            return []
        return [f"view {i + 1}: " + ", ".join(f"{k} {getattr(self.for_view(i), k):g}" for k in keys)
                for i in range(views)]

    def for_view(self, index: int) -> AugmentConfig:
        """The recipe of view ``index``: the [augment.views] values at that index (the last
        where a list is shorter) over the [augment] ones, with no per-view lists left."""
        update: dict[str, Any] = {"views": PerViewAugment()}
        for name in PER_VIEW_KEYS:
            values = getattr(self.views, name)
            if values:
                update[name] = values[min(index, len(values) - 1)]
        copy = self.model_copy(update=update)
        copy.__pydantic_fields_set__ = self.model_fields_set | set(update)
        return copy


MethodName = Literal["simclr", "byol", "mocov3", "simsiam", "barlowtwins", "vicreg", "dino"]


class ModelConfig(Section):
    method: MethodName = Field(
        "simclr", description="Self-supervised method; its settings are in the section of "
        "the same name ([simclr], [byol], [mocov3], [simsiam], [barlowtwins], [vicreg], [dino])."
    )
    encoder: str = Field("resnet18", min_length=1, description="Any timm model name.")
    pretrained: bool = Field(False, description="Start from timm's pretrained weights.")
    small_stem: Literal["auto", "on", "off"] = Field(
        "auto",
        description="3x3 stride-1 stem without max-pool; 'auto' = on for ResNet-like "
        "encoders at image sizes <= 64 px.",
    )
    sync_batchnorm: bool = Field(False, description="Convert BatchNorm to SyncBatchNorm.")
    init_from: str = Field(
        "",
        description="Warm start: the encoder's first weights, from a run (id or folder: its "
        "newest checkpoint, else its features/encoder.safetensors) or an encoder "
        ".safetensors file; '' = fresh (or timm's, with model.pretrained).",
        json_schema_extra=PATH,
    )

    @model_validator(mode="after")
    def _one_start(self) -> ModelConfig:
        if self.pretrained and self.init_from:
            raise FieldProblem(
                "model.init_from", "cannot be combined with model.pretrained; turn one off",
                {"model.pretrained": "cannot be combined with model.init_from; turn one off"},
            )
        return self


class SimCLRConfig(Section):
    temperature: float = Field(0.1, gt=0.0, le=10.0, description="NT-Xent temperature.")
    projector: Literal["mlp", "mlp_bn", "linear"] = Field(
        "mlp", description="Projection head: 'mlp' Linear-ReLU-Linear (the original "
        "experiment's), 'mlp_bn' Linear-BN-ReLU-Linear (solo-learn's), 'linear'.")
    projector_hidden_dim: int = Field(64, ge=1, description="Projector hidden width.")
    projector_dim: int = Field(64, ge=1, description="Projector output width.")


class BYOLConfig(Section):
    projector_hidden_dim: int = Field(4096, ge=1, description="Projector hidden width.")
    projector_dim: int = Field(256, ge=1, description="Projector output width.")
    predictor_hidden_dim: int = Field(4096, ge=1, description="Predictor hidden width.")
    momentum_start: float = Field(
        0.99, ge=0.0, le=1.0, description="Target-network EMA momentum at the first step."
    )
    momentum_end: float = Field(
        1.0, ge=0.0, le=1.0, description="EMA momentum at the last step (cosine schedule)."
    )


class MoCoV3Config(Section):
    projector_hidden_dim: int = Field(4096, ge=1, description="Projector hidden width.")
    projector_dim: int = Field(256, ge=1, description="Projector output width.")
    projector_layers: int = Field(2, ge=2, description="Projector depth in Linear layers.")
    predictor_hidden_dim: int = Field(4096, ge=1, description="Predictor hidden width.")
    temperature: float = Field(0.2, gt=0.0, le=10.0, description="InfoNCE temperature.")
    momentum_start: float = Field(
        0.99, ge=0.0, le=1.0, description="Momentum-encoder EMA momentum at the first step."
    )
    momentum_end: float = Field(
        1.0, ge=0.0, le=1.0, description="EMA momentum at the last step (cosine schedule)."
    )


class SimSiamConfig(Section):
    projector_hidden_dim: int = Field(2048, ge=1, description="Projector hidden width.")
    projector_dim: int = Field(2048, ge=1, description="Projector output width.")
    predictor_hidden_dim: int = Field(512, ge=1, description="Predictor bottleneck width.")
    predictor_fixed_lr: bool = Field(
        True, description="Train the predictor at the peak lr throughout, with no warmup or "
        "decay (the paper's fix_lr, solo-learn's static_lr): it must keep adapting to the "
        "latest features.",
    )


class BarlowTwinsConfig(Section):
    projector_hidden_dim: int = Field(2048, ge=1, description="Projector hidden width (both "
                                      "hidden layers).")
    projector_dim: int = Field(2048, ge=1, description="Projector output width: the size of "
                               "the cross-correlation matrix.")
    lambda_offdiag: float = Field(
        0.0051, ge=0.0, description="Weight of the off-diagonal (redundancy) term against the "
        "on-diagonal (invariance) one (solo-learn's lamb).",
    )
    scale_loss: float = Field(
        0.1, gt=0.0, description="Factor on the whole loss (solo-learn's scale_loss; 0.1 in "
        "its CIFAR recipe, 0.024 for ImageNet).",
    )


class VICRegConfig(Section):
    projector_hidden_dim: int = Field(2048, ge=1, description="Projector hidden width (both "
                                      "hidden layers).")
    projector_dim: int = Field(2048, ge=1, description="Projector output width.")
    invariance_weight: float = Field(
        25.0, ge=0.0, description="Weight of the invariance term (views' mean squared distance)."
    )
    variance_weight: float = Field(
        25.0, ge=0.0, description="Weight of the variance term (hinge on each dimension's std)."
    )
    covariance_weight: float = Field(
        1.0, ge=0.0, description="Weight of the covariance term (off-diagonal covariances)."
    )
    variance_sum: bool = Field(
        False, description="Sum the variance term over the two views (solo-learn) instead of "
        "averaging it (the paper's code, lightly): twice the variance pull at one weight.",
    )


class DINOConfig(Section):
    """DINO; defaults are the argument defaults of the paper's code (Caron et al. 2021,
    facebookresearch/dino main_dino.py): teacher temperature 0.04 with no warm-up, 65536
    prototypes, momentum 0.996, 8 local crops. The paper's ViT runs raise the temperature
    to 0.07 over 30 epochs (``warmup_teacher_temp_epochs``); its gradient clipping (3.0)
    is ``train.grad_clip``."""

    projector_hidden_dim: int = Field(2048, ge=1, description="Head MLP hidden width.")
    head_layers: int = Field(
        3, ge=1, le=8, description="Linear layers in the head MLP (the paper's nlayers): 3 = "
        "in -> hidden -> hidden -> bottleneck, 2 = in -> hidden -> bottleneck, 1 = in -> "
        "bottleneck.",
    )
    bottleneck_dim: int = Field(
        256, ge=1, description="Head MLP output width, l2-normalised before the last layer."
    )
    output_dim: int = Field(
        65536, ge=2, description="Prototypes: width of the weight-normalised last layer, over "
        "which teacher and student distributions are compared.",
    )
    norm_last_layer: bool = Field(
        True, description="Keep the last layer's weight-norm gain at 1 (unit prototypes): "
        "more stable; off can train better but may diverge.",
    )
    head_batch_norm: bool = Field(
        False, description="BatchNorm after the head's hidden layers (the paper's use_bn_in_head, "
        "off for ViTs; an option for ResNets in lightly and solo-learn): batch statistics "
        "spread a young ResNet's similar features apart.",
    )
    freeze_last_layer_epochs: int = Field(
        1, ge=0, description="First epochs in which the last layer gets no gradient (stabilises "
        "the start; raise it if the loss does not fall).",
    )
    student_temp: float = Field(0.1, gt=0.0, le=10.0, description="Student softmax temperature.")
    teacher_temp: float = Field(
        0.04, gt=0.0, le=10.0, description="Teacher softmax temperature after the warm-up "
        "(lower = sharper targets).",
    )
    warmup_teacher_temp: float = Field(
        0.04, gt=0.0, le=10.0, description="Teacher temperature at epoch 0, rising linearly to "
        "teacher_temp.",
    )
    warmup_teacher_temp_epochs: int = Field(
        0, ge=0, description="Epochs of the teacher-temperature warm-up; 0 = none."
    )
    center_momentum: float = Field(
        0.9, ge=0.0, le=1.0, description="EMA momentum of the center subtracted from the "
        "teacher's outputs (against collapse onto one prototype).",
    )
    momentum_start: float = Field(
        0.996, ge=0.0, le=1.0, description="Teacher EMA momentum at the first step."
    )
    momentum_end: float = Field(
        1.0, ge=0.0, le=1.0, description="Teacher EMA momentum at the last step (cosine schedule)."
    )
    local_crops: int = Field(
        8, ge=0, le=64, description="Multi-crop: small local views per image besides the 2 "
        "global ones (the student sees all, the teacher the global ones); 0 = none.",
    )
    local_size: int = Field(
        96, ge=1, le=1024, description="Local views' size in pixels (the paper: 96 for 224 px "
        "images; about 16 for 32 px ones).",
    )
    local_scale: tuple[float, float] = Field(
        (0.05, 0.4), description="Local views' crop area range."
    )
    global_scale: tuple[float, float] = Field(
        (0.4, 1.0), description="Global views' crop area range (replaces augment.crop_scale)."
    )

    @model_validator(mode="after")
    def _scales(self) -> DINOConfig:
        for name in ("local_scale", "global_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise FieldProblem(f"dino.{name}", f"must be 0 < low <= high <= 1 (got [{lo}, {hi}])")
        return self


MethodConfig = (SimCLRConfig | BYOLConfig | MoCoV3Config | SimSiamConfig | BarlowTwinsConfig
                | VICRegConfig | DINOConfig)
METHOD_SECTIONS: tuple[MethodName, ...] = get_args(MethodName)
# Keys that profiles made before the method sections held in [model] (every existing run
# directory has them); they still load, into [simclr].
LEGACY_MODEL_KEYS = ("temperature", "projector", "projector_hidden_dim", "projector_dim")


def move_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the legacy ``model.*`` SimCLR keys moved to ``[simclr]``; one written in
    both places is a FieldProblem, as neither silently wins."""
    model, simclr = data.get("model"), data.get("simclr", {})
    if not (isinstance(model, dict) and isinstance(simclr, dict)):
        return data
    moved = {k: model[k] for k in LEGACY_MODEL_KEYS if k in model}
    if not moved:
        return data
    for key in moved:
        if key in simclr:
            raise FieldProblem(
                f"model.{key}", f"is now simclr.{key}, which is set too; set only simclr.{key}"
            )
    rest = {k: v for k, v in model.items() if k not in moved}
    return {**data, "model": rest, "simclr": {**simclr, **moved}}


class TrainConfig(Section):
    epochs: int = Field(100, ge=1, description="SSL training epochs.")
    batch_size: int = Field(
        1024,
        ge=2,
        description="GLOBAL images per forward pass (each gives 2 views), summed over all "
        "processes; each process gets batch_size / world_size. An optimizer step sees "
        "batch_size * accumulate images.",
    )
    accumulate: int = Field(1, ge=1, description="Gradient-accumulation steps.")
    optimizer: Literal["lars", "sgd", "adamw"] = Field("lars", description="Optimizer.")
    base_lr: float = Field(0.075, gt=0.0, description="Base learning rate before scaling.")
    lr_scaling: Literal["sqrt", "linear", "none"] = Field(
        "sqrt",
        description="lr = base_lr * sqrt(B) | base_lr * B/256 | base_lr, "
        "B = batch_size * accumulate.",
    )
    weight_decay: float = Field(1e-6, ge=0.0, description="Weight decay.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="Momentum (LARS, SGD).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    lars_trust_coefficient: float = Field(1e-3, gt=0.0, description="LARS trust coefficient.")
    lars_clip_lr: bool = Field(
        False, description="Clip LARS's per-tensor ratio so no step exceeds plain SGD at the "
        "scheduled lr (solo-learn's clip_lars_lr, on in its CIFAR recipes)."
    )
    warmup_epochs: float = Field(
        10.0,
        ge=0.0,
        description="Linear warmup epochs, then cosine; at most train.epochs (the default "
        "shrinks to it, a longer value is an error). Where it reaches train.epochs the whole "
        "run is warmup and the lr never decays: run and profile validate print a note.",
    )
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Final lr / peak lr.")
    grad_clip: float = Field(
        0.0, ge=0.0, description="Gradient clipping at this norm before each optimizer step; "
        "0 = off (the DINO paper: 3.0, per tensor).",
    )
    grad_clip_mode: Literal["global", "per_tensor"] = Field(
        "global", description="'global': one norm over all parameters (torch's "
        "clip_grad_norm_); 'per_tensor': each tensor's own norm (DINO's clip_gradients).",
    )
    precision: Literal["bf16", "fp16", "no"] = Field("bf16", description="Mixed precision.")
    channels_last: bool = Field(True, description="channels_last memory format.")
    compile: bool = Field(
        False, description="torch.compile the training forward: the DDP-wrapped model, "
        "teacher included, one graph per view size; evaluation stays eager.",
    )
    tf32: bool = Field(
        True, description="TF32 matmuls and convolutions in the encoder on CUDA (as timm); "
        "losses, kNN and the linear probe run in full float32 either way.",
    )
    val_interval: int = Field(5, ge=0, description="SSL validation every N epochs; 0 = off.")
    checkpoint_interval: int = Field(10, ge=0, description="Checkpoint every N epochs; 0 = end only.")
    keep_checkpoints: int = Field(3, ge=1, description="Number of newest checkpoints kept.")
    log_every: int = Field(10, ge=1, description="Read the loss and log a step every N steps.")
    predict_batch_size: int = Field(512, ge=1, description="Batch size for feature extraction.")
    seed: int = Field(42, description="Random seed; also fixes the train/val split.")
    max_steps_per_epoch: int = Field(
        0, ge=0, description="Cap on steps per epoch (0 = full epoch); for smoke runs."
    )
    online_probe: bool = Field(
        True, description="Train a linear probe on detached features alongside SSL."
    )

    @model_validator(mode="after")
    def _warmup(self) -> TrainConfig:
        """A warmup longer than training never reaches the peak lr: refused when written,
        while the unwritten default shrinks to ``epochs`` (a short test run stays valid)."""
        if self.warmup_epochs <= self.epochs:
            return self
        if "warmup_epochs" not in self.model_fields_set:
            self.__dict__["warmup_epochs"] = float(self.epochs)  # no re-validation loop
            return self
        raise FieldProblem(
            "train.warmup_epochs",
            f"must be <= train.epochs = {self.epochs} (got {self.warmup_epochs:g})",
            {"train.epochs": f"must be >= train.warmup_epochs = {self.warmup_epochs:g} "
                             f"(got {self.epochs}); lower train.warmup_epochs too"},
        )


class ProbeConfig(Section):
    enabled: bool = Field(True, description="Linear evaluation during and after training.")
    interval: int = Field(
        50, ge=0, description="Linear eval every N epochs (0, N, 2N, ... and at the end); 0 = end only."
    )
    epochs: int = Field(90, ge=1, description="Linear-eval epochs.")
    batch_size: int = Field(4096, ge=1, description="Linear-eval train batch.")
    val_batch_size: int = Field(512, ge=1, description="Linear-eval eval batch.")
    base_lr: float = Field(0.1, gt=0.0, description="SGD lr, scaled by batch/256.")
    weight_decay: float = Field(0.0, ge=0.0, description="Linear-eval weight decay.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="Linear-eval momentum.")
    knn: bool = Field(True, description="kNN monitor at every SSL validation.")
    knn_k: int = Field(200, ge=1, description="kNN neighbours.")
    knn_temperature: float = Field(0.1, gt=0.0, description="kNN weighting temperature.")
    knn_max_train: int = Field(
        0, ge=0, description="kNN bank: at most this many training images (a fixed random subset); 0 = all."
    )
    knn_max_queries: int = Field(
        0, ge=0, description="kNN queries: at most this many held-out images (a fixed random subset); 0 = all."
    )
    val_max_images: int = Field(
        0, ge=0, description="SSL validation: at most this many held-out images scored (a fixed "
        "random subset, within the kNN queries' when no larger); 0 = all."
    )

    @field_validator("val_max_images")
    @classmethod
    def _a_batch_of_two(cls, value: int) -> int:
        if value == 1:
            raise FieldProblem("probe.val_max_images", "must be 0 (all) or at least 2: "
                               "validation scores batches of two or more images")
        return value


# Experiment trackers (Accelerate's); each is its own package and sslterm extra of that name.
TrackerName = Literal["tensorboard", "wandb", "mlflow"]


class LaunchConfig(Section):
    num_processes: int = Field(1, ge=1, description="Processes (GPUs) per machine.")
    gpu_ids: str = Field("all", description="GPUs to use: 'all' or a list like '0,1'.")
    cpu: bool = Field(False, description="Force training on the CPU.")
    num_machines: int = Field(1, ge=1, description="Machines taking part.")
    machine_rank: int = Field(0, ge=0, description="This machine's rank (0 = main).")
    main_process_ip: str = Field("", description="Address of machine 0 (multi-machine).")
    main_process_port: int = Field(29500, ge=1, le=65535, description="Rendezvous port.")
    collective_timeout: float = Field(
        10.0, gt=0.0, description="Minutes a training collective waits for the other ranks: "
        "a rank that dies or hangs ends every rank within it. Evaluation and checkpoint "
        "waits allow 2 hours.",
    )
    slurm_cpus_per_task: int = Field(
        0, ge=0, description="sslterm slurm: CPUs of each node's task (all its processes and "
        "their data workers); 0 = launch.num_processes x (data.num_workers + 1).",
    )
    slurm_mem_gb: int = Field(
        0, ge=0, description="sslterm slurm: memory per node in GiB; 0 = "
        "launch.num_processes x (12 + 3 x data.num_workers).",
    )
    slurm_requeue: bool = Field(
        True, description="sslterm slurm: a job stopped by its time limit or pre-emption "
        "requeues itself and resumes from its newest checkpoint.",
    )
    accelerate_config: str = Field(
        "", description="Optional accelerate config file.", json_schema_extra=PATH
    )
    output_dir: str = Field(
        "./runs", description="Folder that holds run directories.", json_schema_extra=PATH
    )
    log_with: list[TrackerName] = Field(
        [],
        description="Experiment trackers that also get every metric, with the profile as "
        "config: tensorboard (RUN/tensorboard), wandb (offline unless WANDB_MODE is set), "
        "mlflow (RUN/mlruns unless MLFLOW_TRACKING_URI is set).",
    )

    @field_validator("log_with", mode="before")
    @classmethod
    def _tracker_list(cls, value: Any) -> Any:
        """``tensorboard,wandb`` (a command-line override, a form field) is a list too."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        if not isinstance(value, list):
            raise FieldProblem("launch.log_with", f'must be a list of tracker names, like '
                               f'["tensorboard"] (got {value!r})')
        return value

    @field_validator("log_with")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        """Accelerate drops a tracker whose package is missing without a word: refused
        here instead, naming the extra that installs it."""
        for n, name in enumerate(names):
            if name in names[:n]:
                raise FieldProblem("launch.log_with", f"names {name!r} twice")
            if importlib.util.find_spec(name) is None:
                raise FieldProblem(
                    "launch.log_with",
                    f"{name} is not installed; pip install 'sslterm[{name}]'",
                )
        return names

    @model_validator(mode="after")
    def _machines(self) -> LaunchConfig:
        if self.machine_rank >= self.num_machines:
            raise FieldProblem(
                "launch.machine_rank",
                f"must be < launch.num_machines = {self.num_machines} (got {self.machine_rank})",
            )
        if self.num_machines > 1 and not self.main_process_ip:
            raise FieldProblem("launch.main_process_ip", "is required when num_machines > 1")
        return self


class Profile(Section):
    name: str = Field(
        "", pattern=r"^[A-Za-z0-9_.-]*$", max_length=100,
        description="Profile name (letters, digits, . _ -); defaults to the file's stem.",
    )
    description: str = Field("", description="Free text shown in the TUI.")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    simclr: SimCLRConfig = Field(default_factory=SimCLRConfig)
    byol: BYOLConfig = Field(default_factory=BYOLConfig)
    mocov3: MoCoV3Config = Field(default_factory=MoCoV3Config)
    simsiam: SimSiamConfig = Field(default_factory=SimSiamConfig)
    barlowtwins: BarlowTwinsConfig = Field(default_factory=BarlowTwinsConfig)
    vicreg: VICRegConfig = Field(default_factory=VICRegConfig)
    dino: DINOConfig = Field(default_factory=DINOConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return move_legacy_keys(data) if isinstance(data, dict) else data

    def local_size_problem(self, size: int) -> FieldProblem | None:
        """Local views are DINO's small crops: a local_size above the training image size
        ``size`` (the paper's 96 px left on 32 px CIFAR images) would upsample them, silently.
        Checked here where the size is known from the profile, and before launch from the
        data (image folders: their first image) where it is not."""
        dino = self.dino
        if self.model.method != "dino" or not dino.local_crops or not size or dino.local_size <= size:
            return None
        return FieldProblem(
            "dino.local_size",
            f"must be <= the training image size, {size} px (got {dino.local_size}); about "
            f"half of it, e.g. 16 for 32 px images",
            {"data.image_size": f"must be >= dino.local_size = {dino.local_size} "
                                f"(got {size}); lower dino.local_size too"},
        )

    def _dino_local_size(self) -> None:
        problem = self.local_size_problem(
            self.data.image_size or SMALL_DATASET_SIZE.get(self.data.dataset, 0))
        if problem is not None:
            raise problem

    def _batched_decode(self) -> None:
        """``data.decode = 'batched'`` reads image files and augments in batch: it needs a
        folder dataset and a data.augment that leaves large images to it."""
        data = self.data
        if data.decode != "batched":
            return
        if data.dataset in SMALL_DATASET_SIZE:
            raise FieldProblem(
                "data.decode", f"'batched' decodes image files; {data.dataset} is not a folder "
                "of image files (use an imagenet dataset or imagefolder)")
        if data.augment != "auto":
            where = ("per sample in DataLoader workers" if data.augment == "cpu"
                     else "on the tensor cache")
            raise FieldProblem(
                "data.decode", f"'batched' augments in batch after decoding, but data.augment "
                f"= '{data.augment}' asks for augmentation {where}; set data.augment = 'auto'",
                {"data.augment": f"must be 'auto' with data.decode = 'batched' (got "
                                 f"'{data.augment}')"})

    def method_config(self) -> MethodConfig:
        """The chosen method's own section (``[simclr]`` for ``model.method = "simclr"``)."""
        return getattr(self, self.model.method)

    def view_count(self) -> int:
        """Augmented views per image: DINO's 2 global and its local crops, else 2."""
        return 2 + self.dino.local_crops if self.model.method == "dino" else 2

    def _per_view_lengths(self) -> None:
        """A per-view list longer than the method's views is a slip (a recipe of another
        method, a local crop count lowered): refused rather than partly ignored."""
        n = self.view_count()
        for name in PER_VIEW_KEYS:
            values = getattr(self.augment.views, name)
            if len(values) > n:
                raise FieldProblem(
                    f"augment.views.{name}", f"has {len(values)} values, but "
                    f"{self.model.method} makes {n} views of each image")

    @model_validator(mode="after")
    def _cross(self) -> Profile:
        world = self.launch.num_processes * self.launch.num_machines
        if self.train.batch_size % world:
            raise FieldProblem(
                "train.batch_size",
                f"must divide evenly over {world} processes (got {self.train.batch_size})",
            )
        if self.train.batch_size // world < 2:
            raise FieldProblem(
                "train.batch_size", f"gives fewer than 2 images per process over {world} processes"
            )
        if self.data.dataset.startswith("imagenet") and self.data.augment == "gpu":
            raise FieldProblem("data.augment", "'gpu' needs a small-image dataset, not ImageNet")
        self._batched_decode()
        self._dino_local_size()
        self._per_view_lengths()
        if self.train.compile and self.model.sync_batchnorm:
            raise FieldProblem(  # SyncBatchNorm's collectives under torch.compile: known PyTorch bugs
                "train.compile", "cannot be combined with model.sync_batchnorm; turn one off",
                {"model.sync_batchnorm": "cannot be combined with train.compile; turn one off"},
            )
        return self
