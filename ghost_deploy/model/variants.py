"""The registry of named GhostNet variants and their default preprocessing."""

from __future__ import annotations

import dataclasses

from ghost_deploy.config import MAX_INPUT_SIZE
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import InputError

FAMILIES = ("v1", "v2", "v3")
FAMILY_PREFIX = {"v1": "ghostnet_", "v2": "ghostnetv2_", "v3": "ghostnetv3_"}
# V2 and V3 pool the DFC attention input by 2 in the last stage, whose maps are input/32: at least 2 px
MIN_INPUT = {"v1": 32, "v2": 64, "v3": 64}


def _imagenet(interpolation: str = "bilinear") -> Preprocessing:
    return Preprocessing(resize=256, crop=224, interpolation=interpolation)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named GhostNet: its family (v1/v2/v3), width multiplier and the preprocessing it was published with."""

    name: str
    width: float
    input_size: int = 224
    preprocessing: Preprocessing = dataclasses.field(default_factory=_imagenet)
    family: str = "v1"


# ImageNet defaults: resize 256, centre crop 224, ImageNet mean/std; bilinear as the V1 release's validate.py,
# bicubic for V2/V3 as timm's configs for their published weights (crop_pct 0.875 is 224/256).
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("ghostnet_050", 0.5),
        Variant("ghostnet_100", 1.0),
        Variant("ghostnet_130", 1.3),
        *(Variant(f"ghostnetv2_{w}", int(w) / 100, 224, _imagenet("bicubic"), "v2") for w in ("100", "130", "160")),
        *(
            Variant(f"ghostnetv3_{w}", int(w) / 100, 224, _imagenet("bicubic"), "v3")
            for w in ("050", "100", "130", "160")
        ),
    )
}


def get_variant(name: str) -> Variant:
    """Look up a variant by name, with a message listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise InputError(f"unknown architecture {name!r}; known: {', '.join(VARIANTS)}") from None


def family_of(arch: str) -> str:
    """The family ('v1', 'v2', 'v3') of an architecture name; 'custom' and unknown names are 'v1'."""
    variant = VARIANTS.get(arch)
    if variant is not None:
        return variant.family
    for family in ("v3", "v2"):
        if arch.startswith(FAMILY_PREFIX[family]):
            return family
    return "v1"


def variant_for_width(width: float, family: str = "v1") -> Variant:
    """The registered variant of a family and width, or an unregistered one with that family's defaults."""
    for v in VARIANTS.values():
        if v.family == family and abs(v.width - width) < 1e-9:
            return v
    base = VARIANTS[f"{FAMILY_PREFIX[family]}100"]
    return dataclasses.replace(base, name=f"{FAMILY_PREFIX[family]}{round(width * 100):03d}", width=width)


def check_input_size(size: int, family: str = "v1") -> None:
    """GhostNet downsamples by 32: refuse other input sizes with the nearest valid ones.

    V2 and V3 also need the last stage's maps (input / 32) to be at least 2 px for DFC attention's
    average pool by 2: their smallest input is 64. At most MAX_INPUT_SIZE, whoever says it (flag or file).
    """
    if size > MAX_INPUT_SIZE:
        raise InputError(f"input size {size} is larger than {MAX_INPUT_SIZE}, the largest ghost-deploy takes")
    smallest = MIN_INPUT[family]
    if size < smallest and size % 32 == 0:
        raise InputError(
            f"input size {size} is too small for GhostNet{family.upper()}: its last feature maps would be "
            f"{size // 32} px, and DFC attention pools them by 2 (needs at least 2 px); use {smallest} or more"
        )
    if size < 32 or size % 32:
        lower, upper = max(smallest, size // 32 * 32), max(smallest, (size // 32 + 1) * 32)
        choice = f"{lower}" if lower == upper else f"{lower} or {upper}"
        raise InputError(f"input size {size} is not a multiple of 32 (GhostNet downsamples by 32); use {choice}")
