"""The views a method asks for, and the concrete crops they become in one run.

A method declares its views (``Method.views()``) without knowing the run's image size,
the profile's crop scale or its per-view recipe ([augment.views]); the data path resolves
them here, once, so the batched and the per-sample augmentation build exactly the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sslterm.profile.schema import PER_VIEW_KEYS, AugmentConfig


@dataclass(frozen=True)
class View:
    """One augmented view per image: ``size`` in pixels (None: the run's image size), the
    crop area range (None: the profile's ``augment.crop_scale``) and ``recipe``, the index
    into the [augment.views] lists its values come from (set when resolved)."""

    size: int | None = None
    scale: tuple[float, float] | None = None
    recipe: int = 0


def resolve_views(
    views: Sequence[View], size: int, crop_scale: tuple[float, float], recipes: int = 0
) -> tuple[View, ...]:
    """The views with every None replaced by the run's ``size`` / ``crop_scale``, in order,
    view ``i`` taking recipe ``min(i, recipes - 1)``: ``recipes`` is the longest
    [augment.views] list (``cfg.views.longest()``), past which all views are alike, so
    equal views still share one batched pass.

    Raises ValueError for an empty plan, a size below 1 or a scale outside 0 < lo <= hi <= 1:
    the augmentation would otherwise fail later, far from the cause, or crop nothing.
    """
    if not views:
        raise ValueError("a method must ask for at least one view")
    resolved = tuple(
        View(size if v.size is None else v.size, tuple(crop_scale if v.scale is None else v.scale),
             min(i, recipes - 1) if recipes else v.recipe)
        for i, v in enumerate(views)
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
    """The augmentation recipe of one resolved view: the profile's with the view's
    [augment.views] values, cropping ``view.scale``."""
    return cfg.for_view(view.recipe).model_copy(update={"crop_scale": view.scale})


def describe_views(views: Sequence[View], cfg: AugmentConfig | None = None) -> str:
    """A resolved plan in words, e.g. ``2 x 32 px (scale 0.4-1) + 6 x 16 px (scale 0.05-0.4)``;
    with ``cfg``, each view that differs from [augment] says how, e.g.
    ``1 x 32 px (scale 0.08-1; solarize_p 0.2)``."""
    parts = []
    for v, slots in view_groups(views).items():
        text = f"{len(slots)} x {v.size} px (scale {v.scale[0]:g}-{v.scale[1]:g}"
        if cfg is not None:
            own = cfg.for_view(v.recipe)
            text += "".join(f"; {name} {getattr(own, name):g}" for name in PER_VIEW_KEYS
                            if getattr(cfg.views, name) and getattr(own, name) != getattr(cfg, name))
        parts.append(text + ")")
    return " + ".join(parts)
