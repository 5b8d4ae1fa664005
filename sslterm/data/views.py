"""The views a method asks for, and the concrete crops they become in one run.

A method declares its views (``Method.views()``) without knowing the run's image size
or the profile's crop scale; the data path resolves them here, once, so the batched and
the per-sample augmentation build exactly the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sslterm.profile.schema import AugmentConfig


@dataclass(frozen=True)
class View:
    """One augmented view per image: ``size`` in pixels (None: the run's image size) and the
    crop area range (None: the profile's ``augment.crop_scale``)."""

    size: int | None = None
    scale: tuple[float, float] | None = None


def resolve_views(
    views: Sequence[View], size: int, crop_scale: tuple[float, float]
) -> tuple[View, ...]:
    """The views with every None replaced by the run's ``size`` / ``crop_scale``, in order.

    Raises ValueError for an empty plan, a size below 1 or a scale outside 0 < lo <= hi <= 1:
    the augmentation would otherwise fail later, far from the cause, or crop nothing.
    """
    if not views:
        raise ValueError("a method must ask for at least one view")
    resolved = tuple(
        View(size if v.size is None else v.size, tuple(crop_scale if v.scale is None else v.scale))
        for v in views
    )
    for i, v in enumerate(resolved):
        lo, hi = v.scale
        if v.size < 1 or not 0 < lo <= hi <= 1:
            raise ValueError(
                f"view {i} ({v.size} px, crop scale {lo}-{hi}) needs size >= 1 and "
                "0 < scale low <= scale high <= 1"
            )
    return resolved


def view_groups(views: Sequence[View]) -> dict[View, list[int]]:
    """Positions of equal views, keyed by view in order of first appearance: the views
    drawn together (one batched call per group)."""
    groups: dict[View, list[int]] = {}
    for i, v in enumerate(views):
        groups.setdefault(v, []).append(i)
    return groups


def view_config(cfg: AugmentConfig, view: View) -> AugmentConfig:
    """The augmentation recipe of one resolved view: the profile's, cropping ``view.scale``."""
    return cfg.model_copy(update={"crop_scale": view.scale})


def describe_views(views: Sequence[View]) -> str:
    """A resolved plan in words, e.g. ``2 x 32 px (scale 0.4-1) + 6 x 16 px (scale 0.05-0.4)``."""
    return " + ".join(
        f"{len(slots)} x {v.size} px (scale {v.scale[0]:g}-{v.scale[1]:g})"
        for v, slots in view_groups(views).items()
    )
