"""Image preprocessing: one implementation used by training, verification, profiling and calibration.

Pure numpy + PIL (no torch), so a device runs exactly the preprocessing the model was trained with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ghost_deploy.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, centre-crop `crop`, scale to [0, 1], normalise; RGB, NCHW."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATION:
            raise InputError(
                f"interpolation {self.interpolation!r} is not supported; use one of {sorted(_INTERPOLATION)}"
            )
        if self.crop < 1 or self.resize < self.crop:
            raise InputError(f"resize {self.resize} must be at least crop {self.crop}, and crop at least 1")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise InputError(f"mean and std need 3 values each, std positive; got mean {self.mean}, std {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in checkpoints and reports."""
        return {
            **dataclasses.asdict(self),
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW",
            "channel_order": "RGB",
            "scale": "1/255",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of `to_dict` (unknown keys ignored)."""
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=_triple(data.get("mean", IMAGENET_MEAN)),
            std=_triple(data.get("std", IMAGENET_STD)),
            interpolation=str(data.get("interpolation", "bilinear")),
        )

    def replace(self, **changes: Any) -> Preprocessing:
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) != 3:
        raise InputError(f"expected 3 values (R,G,B), got {len(vals)}: {values}")
    return vals[0], vals[1], vals[2]


def parse_triple(text: str) -> tuple[float, float, float]:
    """Parse 'R,G,B' as given to --mean / --std."""
    try:
        values = [float(v) for v in text.split(",")]
        if len(values) != 3:
            raise ValueError(text)
        return _triple(values)
    except ValueError:
        raise InputError(f"expected three comma-separated numbers like 0.485,0.456,0.406, got {text!r}") from None


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB: grayscale repeated, alpha dropped, 16-bit scaled down."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                img8 = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
                return img8.convert("RGB")
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}; give a JPEG, PNG or BMP file") from None


def preprocess_image(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Turn an RGB PIL image into a float32 CHW array with the given preprocessing."""
    w, h = img.size
    scale = pre.resize / min(w, h)
    new_w, new_h = max(pre.crop, round(w * scale)), max(pre.crop, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _INTERPOLATION[pre.interpolation])
    left, top = (new_w - pre.crop) // 2, (new_h - pre.crop) // 2
    img = img.crop((left, top, left + pre.crop, top + pre.crop))
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean, std = np.asarray(pre.mean, dtype=np.float32), np.asarray(pre.std, dtype=np.float32)
    normalised: np.ndarray = ((pixels - mean) / std).astype(np.float32, copy=False)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def preprocess_file(path: Path, pre: Preprocessing) -> np.ndarray:
    """Load and preprocess one image file into a float32 CHW array."""
    return preprocess_image(load_rgb(path), pre)
