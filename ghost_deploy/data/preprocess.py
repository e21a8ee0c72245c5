"""Image preprocessing: one implementation used by training, verification, profiling and calibration.

Pure numpy + PIL (no torch), so a device runs exactly the preprocessing the model was trained with.

Every image, read from a file (`load_rgb`) or handed over as a PIL image (`to_rgb`: `Bundle.predict`), takes
one conversion to 8-bit RGB: the EXIF orientation applied (the image as viewers show it, and as a photo was
labelled), 16-bit images scaled by 65535, 32-bit integer and float images by their value range (see `to_rgb`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ghost_deploy.data.kinds import describe
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import open_regular

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# Bounds checked on the image header, before any pixel is decoded: an image is refused as unreadable above
# MAX_IMAGE_PIXELS (64 Mpx: 192 MB as RGB), and the resized image is never larger than MAX_RESIZED_PIXELS (a
# strip of 1 x 1000000 pixels resized to a shorter side of 256 would be 256 x 256000000: only the crop is made).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_RESIZED_PIXELS = 4096 * 4096
MAX_SIDE = 4096  # resize and crop of any preprocessing (flags, checkpoints, manifests)


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
        if self.crop < 1 or self.resize < self.crop or self.resize > MAX_SIDE:
            raise InputError(
                f"resize {self.resize} must be at least crop {self.crop} and at most {MAX_SIDE}, and crop at least 1"
            )
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*self.mean, *self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or not finite or any(s <= 0 for s in self.std):
            raise InputError(
                f"mean and std need 3 finite numbers each, std positive; got mean {self.mean}, std {self.std}; "
                "check --mean/--std (e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)"
            )

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
        """Inverse of `to_dict` (unknown keys ignored); InputError when a value has the wrong type."""
        try:
            return cls(
                resize=_integer(data["resize"], "resize"),
                crop=_integer(data["crop"], "crop"),
                mean=_triple(data.get("mean", IMAGENET_MEAN)),
                std=_triple(data.get("std", IMAGENET_STD)),
                interpolation=str(data.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"preprocessing {str(data)[:200]} is malformed ({exc!r})") from None

    def replace(self, **changes: Any) -> Preprocessing:
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"preprocessing {name} must be an integer, got {value!r}")
    return value


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InputError(f"expected 3 numbers (R,G,B), got {values!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InputError(f"expected 3 numbers (R,G,B), got {values!r}")
    vals = tuple(float(v) for v in values)
    if len(vals) != 3:
        raise InputError(f"expected 3 values (R,G,B), got {len(vals)}: {values}")
    return vals[0], vals[1], vals[2]


def parse_triple(text: str) -> tuple[float, float, float]:
    """Parse 'R,G,B' as given to --mean / --std."""
    try:
        values = [float(v) for v in text.split(",")]
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(text)
        return _triple(values)
    except ValueError:
        raise InputError(
            f"expected three finite comma-separated numbers like 0.485,0.456,0.406, got {text!r}"
        ) from None


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB by `to_rgb`: grayscale repeated, alpha dropped, 16-bit scaled down, EXIF
    orientation applied.

    Refused as unreadable (InputError), before any pixel is decoded: anything but a regular file (a FIFO would
    block), an empty (0-pixel) image, and one of more than MAX_IMAGE_PIXELS (a decompression bomb).
    """
    try:
        with open_regular(path, "image") as fh, Image.open(fh) as img:
            return to_rgb(img, path)
    except InputError:
        raise
    except UnidentifiedImageError:  # PIL's own text names a file handle, not the file: say what the file is
        raise InputError(f"cannot read image {path}: {_not_an_image(path)}; give a JPEG, PNG or BMP file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {str(exc)[:200]}; give a JPEG, PNG or BMP file") from None


def _not_an_image(path: Path) -> str:
    what = describe(path)
    if what.endswith("image"):
        return f"it starts like {what}, but cannot be decoded (damaged, or a variant PIL does not read)"
    return f"it is {what}, not an image"


def check_image_size(size: tuple[int, int], where: object = "(in memory)") -> None:
    """InputError for an image with no pixel or with more than MAX_IMAGE_PIXELS (checked on the header)."""
    w, h = size
    if w < 1 or h < 1:
        raise InputError(f"cannot read image {where}: it is {w} x {h} pixels, empty; give an image with pixels")
    if w * h > MAX_IMAGE_PIXELS:
        raise InputError(
            f"cannot read image {where}: it declares {w} x {h} pixels, more than the {MAX_IMAGE_PIXELS // 2**20} "
            "Mpx an input may have (a decompression bomb, or an image to downscale first)"
        )


def to_rgb(img: Image.Image, where: object = "(in memory)") -> Image.Image:
    """The one conversion of an image (opened from a file, or a caller's PIL image, left unchanged) to 8-bit RGB.

    The pixel count is checked on the header before anything is decoded. The EXIF orientation is applied
    (a phone's portrait photo is stored sideways). 16-bit modes are scaled by 65535; 32-bit integer ("I") and
    float ("F") images, which carry no range, by their values: a float image within 0..1 as 0..1, else any
    within 0..255 as 8-bit, within 0..65535 as 16-bit; negative, larger or non-finite values are refused
    (InputError: convert the image to 8 or 16 bits first). Grayscale is repeated, alpha dropped.
    """
    check_image_size(img.size, where)
    try:
        img.load()
        img = _upright(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.asarray(img, dtype=np.float32)
            scaled = np.clip(arr / _peak(arr, img.mode, where) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return Image.fromarray(scaled, mode="L").convert("RGB")
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read image {where}: {str(exc)[:200]}; give a JPEG, PNG or BMP file") from None


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation (2..8) says; a damaged EXIF block is read as none, as viewers do."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # PIL's EXIF parser raises many kinds on damaged data
        return img
    return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img


def _peak(arr: np.ndarray, mode: str, where: object) -> float:
    """The value that becomes 255: 65535 for 16-bit modes; by the value range for "I" and "F" (see `to_rgb`)."""
    if mode.startswith("I;16"):
        return 65535.0
    low, high = (float(arr.min()), float(arr.max())) if np.isfinite(arr).all() else (math.nan, math.nan)
    if not (low >= 0 and high <= 65535):
        raise InputError(
            f"cannot read image {where}: a {'float' if mode == 'F' else '32-bit'} image with values from {low:g} to "
            f"{high:g}, outside 0..65535 (or not finite); convert it to 8 or 16 bits first"
        )
    if mode == "F" and high <= 1.0:
        return 1.0
    return 255.0 if high <= 255 else 65535.0


def preprocess_image(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Turn an RGB PIL image into a float32 CHW array with the given preprocessing.

    Memory is bounded by the crop, not the image's shape: when the resized image would exceed
    MAX_RESIZED_PIXELS, only the crop's region is resampled.
    """
    w, h = img.size
    check_image_size((w, h))
    scale = pre.resize / min(w, h)
    new_w, new_h = max(pre.crop, round(w * scale)), max(pre.crop, round(h * scale))
    left, top = (new_w - pre.crop) // 2, (new_h - pre.crop) // 2
    if new_w * new_h > MAX_RESIZED_PIXELS:  # the crop's source region only: never the whole resized image
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + pre.crop) * sx, (top + pre.crop) * sy)
        img = img.resize((pre.crop, pre.crop), _INTERPOLATION[pre.interpolation], box=box)
    else:
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), _INTERPOLATION[pre.interpolation])
        img = img.crop((left, top, left + pre.crop, top + pre.crop))
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean, std = np.asarray(pre.mean, dtype=np.float32), np.asarray(pre.std, dtype=np.float32)
    normalised: np.ndarray = ((pixels - mean) / std).astype(np.float32, copy=False)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def preprocess_file(path: Path, pre: Preprocessing) -> np.ndarray:
    """Load and preprocess one image file into a float32 CHW array."""
    return preprocess_image(load_rgb(path), pre)
