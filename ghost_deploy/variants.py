"""The registry of named GhostNet variants and their default preprocessing."""

from __future__ import annotations

import dataclasses

from ghost_deploy.errors import InputError
from ghost_deploy.preprocess import Preprocessing


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named GhostNet: its width multiplier and the preprocessing it was published with."""

    name: str
    width: float
    input_size: int = 224
    preprocessing: Preprocessing = dataclasses.field(default_factory=lambda: Preprocessing(resize=256, crop=224))


# ImageNet defaults of the official release: resize 256, centre crop 224, ImageNet mean/std, bilinear.
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("ghostnet_050", 0.5),
        Variant("ghostnet_100", 1.0),
        Variant("ghostnet_130", 1.3),
    )
}


def get_variant(name: str) -> Variant:
    """Look up a variant by name, with a message listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise InputError(f"unknown architecture {name!r}; known: {', '.join(VARIANTS)}") from None


def variant_for_width(width: float) -> Variant:
    """The registered variant of a width, or an unregistered one with ImageNet defaults."""
    for v in VARIANTS.values():
        if abs(v.width - width) < 1e-9:
            return v
    return Variant(f"ghostnet_{round(width * 100):03d}", width)


def check_input_size(size: int) -> None:
    """GhostNet downsamples by 32: refuse other input sizes with the nearest valid ones."""
    if size < 32 or size % 32:
        lower, upper = max(32, size // 32 * 32), (size // 32 + 1) * 32
        raise InputError(
            f"input size {size} is not a multiple of 32 (GhostNet downsamples by 32); use {lower} or {upper}"
        )
