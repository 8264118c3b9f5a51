"""Augmentation recipes: named sets of op settings (`AUGMENT_RECIPES`), the augment config built
from one, how a view's concrete settings resolve from it, and their validation.

The jitted augmentation (`augment.py`) and the host crops (`pipeline.py`) read a view's settings
through `resolve_view`; configs build the block with `augment_config`. Only ml_collections here.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

# Every op field of a view and its default: the `supcon_cifar` recipe (the PyTorch SupContrast
# reference). A recipe changes some of them, for all views or (`view1`, `view2`, ...) per view.
AUGMENT_OP_DEFAULTS = dict(
    crop_scale=(0.2, 1.0),  # random-resized-crop area fraction (on the host for varying-size images)
    crop_ratio=(3 / 4, 4 / 3),
    flip_prob=0.5,
    jitter_prob=0.8,  # colour jitter, its four adjustments in a random order
    brightness=0.4,  # additive delta in [-b, b]
    contrast=0.4,  # factor in [max(0, 1 - c), 1 + c]
    saturation=0.4,
    hue=0.1,  # fraction of the colour circle in [-h, h]
    grayscale_prob=0.2,
    blur_prob=0.0,  # Gaussian blur, kernel ~10% of the side
    blur_sigma=(0.1, 2.0),
    solarize_prob=0.0,  # threshold 0.5
    randaugment_num_ops=0,  # RandAugment N (0: off), ops drawn per example
    randaugment_magnitude=9.0,  # RandAugment M on timm's 0..10 scale
)
AUGMENT_RECIPES = {
    "supcon_cifar": {},
    "simclr": dict(crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=0.5),
    # BYOL's two asymmetric views; views past the second use the flat fields (SimCLR's blur_prob).
    "byol": dict(
        crop_scale=(0.08, 1.0),
        saturation=0.2,
        blur_prob=0.5,
        view1=dict(blur_prob=1.0, solarize_prob=0.0),
        view2=dict(blur_prob=0.1, solarize_prob=0.2),
    ),
    "randaugment": dict(crop_scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0, randaugment_num_ops=2),
    "none": dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0),
}
AUGMENT_PROBS = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")
AUGMENT_VIEW_KEYS = ("view1", "view2")  # in every augment config, so the command line can set them


def _is_view_key(name: str) -> bool:
    return name.startswith("view") and name[4:].isdigit() and int(name[4:]) >= 1


def _unset_op_fields() -> ml_collections.ConfigDict:
    """Every op field as an unset, typed placeholder: None means "the recipe's value"."""
    return ml_collections.ConfigDict({key: placeholder(type(value)) for key, value in AUGMENT_OP_DEFAULTS.items()})


def augment_config(recipe: str = "supcon_cifar", **overrides) -> ml_collections.ConfigDict:
    """The augmentation of a named recipe (`AUGMENT_RECIPES`), with `overrides` on top.

    Op fields left unset (None) take the recipe's value, so the recipe can be switched from the
    command line (`--config.augment.recipe=byol`) and any field tuned on top of it, for all views
    (`--config.augment.blur_prob=0.3`) or for one (`--config.augment.view2.solarize_prob=0.1`).
    Precedence: defaults < recipe < recipe's per-view values < flat fields set < view fields set.

    supcon_cifar (default; PyTorch SupContrast): crop scale (0.2, 1), flip 0.5, jitter (0.4, 0.4,
    0.4, 0.1) p=0.8, grayscale 0.2. simclr: crop (0.08, 1), jitter (0.8, 0.8, 0.8, 0.2) p=0.8,
    grayscale 0.2, blur 0.5. byol: crop (0.08, 1), jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale
    0.2; view 1 blur 1.0 / solarize 0, view 2 blur 0.1 / solarize 0.2. randaugment: crop (0.08, 1),
    flip, RandAugment N=2 M=9, no jitter or grayscale. none: the view is the normalised image.
    """
    if recipe not in AUGMENT_RECIPES:
        raise ValueError(f"augment.recipe={recipe!r}; allowed: {tuple(AUGMENT_RECIPES)}")
    allowed = ("recipe", "mean", "std", *AUGMENT_OP_DEFAULTS)
    unknown = [key for key in overrides if key not in allowed and not _is_view_key(key)]
    if unknown:
        raise ValueError(f"augment.{unknown[0]} is not an augment field; allowed: {allowed}, view1, ...")
    cfg = _unset_op_fields()
    cfg.recipe = recipe
    cfg.mean = (0.5, 0.5, 0.5)
    cfg.std = (0.25, 0.25, 0.25)
    for key in AUGMENT_VIEW_KEYS:
        cfg[key] = _unset_op_fields()
    for key, value in overrides.items():
        if _is_view_key(key):
            if key not in cfg:
                cfg[key] = _unset_op_fields()
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _set_fields(fields: ml_collections.ConfigDict | None) -> dict:
    return {} if fields is None else {key: value for key, value in fields.items() if value is not None}


def resolve_view(augment: ml_collections.ConfigDict, view_index: int) -> ml_collections.ConfigDict:
    """The concrete, flat config of view `view_index` (0-based): every op field plus recipe, mean, std."""
    name = f"view{view_index + 1}"
    recipe = dict(AUGMENT_RECIPES[augment.recipe])
    recipe_views = {key: recipe.pop(key) for key in list(recipe) if _is_view_key(key)}
    user_flat = {key: value for key, value in _set_fields(augment).items() if key in AUGMENT_OP_DEFAULTS}
    user_view = _set_fields(augment.get(name))
    unknown = sorted(set(user_view) - set(AUGMENT_OP_DEFAULTS))
    if unknown:
        raise ValueError(
            f"augment.{name}.{unknown[0]} is not a per-view op field; allowed: {tuple(AUGMENT_OP_DEFAULTS)}"
        )
    fields = AUGMENT_OP_DEFAULTS | recipe | recipe_views.get(name, {}) | user_flat | user_view
    return ml_collections.ConfigDict(
        fields | {"recipe": augment.recipe, "mean": tuple(augment.mean), "std": tuple(augment.std)}
    )


def _check_augment_fields(prefix: str, fields: dict) -> None:
    """Range checks of the augment fields present in `fields` (set flat fields or one view's)."""
    for key in AUGMENT_PROBS:
        if key in fields and not 0 <= fields[key] <= 1:
            raise ValueError(f"{prefix}.{key}={fields[key]} must be in [0, 1]")
    ranges = {
        "crop_scale": ("0 < lo <= hi <= 1", lambda lo, hi: 0 < lo <= hi <= 1),
        "crop_ratio": ("0 < lo <= hi", lambda lo, hi: 0 < lo <= hi),
        "blur_sigma": ("0 < lo <= hi", lambda lo, hi: 0 < lo <= hi),
    }
    for key, (allowed, ok) in ranges.items():
        if key in fields and (len(fields[key]) != 2 or not ok(*fields[key])):
            raise ValueError(f"{prefix}.{key}={tuple(fields[key])} must be (lo, hi) with {allowed}")
    for key in ("brightness", "contrast", "saturation"):
        if key in fields and not fields[key] >= 0:
            raise ValueError(f"{prefix}.{key}={fields[key]} must be >= 0")
    if "hue" in fields and not 0 <= fields["hue"] <= 0.5:
        raise ValueError(f"{prefix}.hue={fields['hue']} must be in [0, 0.5]")
    if "randaugment_num_ops" in fields and not fields["randaugment_num_ops"] >= 0:
        raise ValueError(f"{prefix}.randaugment_num_ops={fields['randaugment_num_ops']} must be >= 0 (0: off)")
    if "randaugment_magnitude" in fields and not 0 <= fields["randaugment_magnitude"] <= 10:
        raise ValueError(f"{prefix}.randaugment_magnitude={fields['randaugment_magnitude']} must be in [0, 10]")


def validate_augment_config(augment: ml_collections.ConfigDict) -> None:
    """One-line errors for a bad recipe name, field value, or per-view override key."""
    if augment.recipe not in AUGMENT_RECIPES:
        raise ValueError(f"augment.recipe={augment.recipe!r}; allowed: {tuple(AUGMENT_RECIPES)}")
    allowed = ("recipe", "mean", "std", *AUGMENT_OP_DEFAULTS)
    for key in augment:
        if key in allowed:
            continue
        if not _is_view_key(key) or not isinstance(augment[key], ml_collections.ConfigDict):
            raise ValueError(f"augment.{key} is not an augment field; allowed: {allowed}, view1, ...")
        resolve_view(augment, int(key[4:]) - 1)  # unknown per-view fields
        _check_augment_fields(f"augment.{key}", _set_fields(augment[key]))
    _check_augment_fields("augment", {k: v for k, v in _set_fields(augment).items() if k in AUGMENT_OP_DEFAULTS})
    for key in ("mean", "std"):
        if len(augment[key]) != 3:
            raise ValueError(f"augment.{key}={tuple(augment[key])} must have 3 values (R, G, B)")
    if not all(value > 0 for value in augment.std):
        raise ValueError(f"augment.std={tuple(augment.std)} must be > 0")
