"""The images of `tools/bench_export.py`'s ort-int8 part: the random-weight GhostNet's BatchNorm statistics,
its calibration inputs and the held-out inputs of its cosine to FP32.

`digits` (the default): the shipped digits (8x8 grayscale, resized to the model's size): statistics from the
calibration split, held-out images from the test split.

`photos`: square crops of real photographs, a third of the shorter side to all of it, half of them mirrored,
resized to the model's size: statistics and calibration from scikit-learn's two sample photos (china.jpg,
flower.jpg), held-out crops from a third photo none of them comes from (matplotlib's grace_hopper.jpg). Both
packages are in the `dev` extra.

Why photos exist (measured on GhostNet-1.0x at 224, issue 20's follow-up): a random-weight network whose
BatchNorm statistics come from 8x8 digits blown up to 224x224 sees only smooth, gray, mostly flat images, and
it amplifies anything else: Gaussian input noise of a third of one 8-bit gray level moves its logits to a mean
cosine of 0.986 against itself, below the INT8 gate's 0.99 before anything is quantized, and rounding its input
alone to uint8 costs 0.012. The same network with statistics from photo crops moves to 0.9997 under that
noise; the digits' cosine measures the network's sensitivity more than the quantization. The bench prints
that check (`with_noise`) for whichever images it uses.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from PIL import Image

from ghost_deploy.data.inputs import ImageFolder, Sample
from ghost_deploy.data.preprocess import Preprocessing, preprocess_file, preprocess_image
from ghost_deploy.errors import EXIT_MISSING_DEPENDENCY

KINDS = ("digits", "photos")
STATISTICS = 32  # images the BatchNorm statistics are measured on
# input noise of the sensitivity check: a third of one 8-bit gray level after ImageNet normalisation
# (1 / 255 / 0.226 = 0.017)
NOISE_STD = 0.005
# any fixed seeds: the same crops every run, and different ones for statistics, calibration and held-out
_SEEDS = {"statistics": 1, "calibration": 2, "held_out": 3}


@dataclasses.dataclass(frozen=True)
class Int8Images:
    """What the ort-int8 part runs on, and a line saying what it is."""

    statistics: np.ndarray  # N x 3 x S x S: the BatchNorm statistics of the random-weight model
    calibration: list[Sample]
    held_out: np.ndarray
    what: str


def int8_images(kind: str, size: int, calibration: int, held_out: int, digits_root: str) -> Int8Images:
    """The images of `kind` ("digits" under `digits_root`, or "photos") at `size`, `calibration` and
    `held_out` of them; exits with 3 when the photos' packages are missing."""
    if kind == "digits":
        return _digits(size, calibration, held_out, digits_root)
    photos = _photos()
    seen, unseen = photos[:2], photos[2:]
    cal = _crops(seen, calibration, size, _SEEDS["calibration"])
    return Int8Images(
        _crops(seen, STATISTICS, size, _SEEDS["statistics"]),
        [Sample(row, None, f"photo-crop-{i}") for i, row in enumerate(cal)],
        _crops(unseen, held_out, size, _SEEDS["held_out"]),
        f"photo crops: statistics and {calibration} calibration crops of china.jpg and flower.jpg, "
        f"{held_out} held-out crops of grace_hopper.jpg",
    )


def _digits(size: int, calibration: int, held_out: int, root: str) -> Int8Images:
    """The shipped digits, as the bench always used them."""
    from pathlib import Path

    base = Path(root)
    exact = Preprocessing(resize=size, crop=size)

    def split(name: str, count: int) -> np.ndarray:
        paths = sorted((base / name).rglob("*.png"))[:count]
        return np.stack([preprocess_file(p, exact) for p in paths])

    samples = list(ImageFolder(base / "calibration", Preprocessing(round(size * 256 / 224), size), limit=calibration))
    return Int8Images(
        split("calibration", STATISTICS),
        samples,
        split("test", held_out),
        f"digits: statistics and {calibration} calibration images of the calibration split, {held_out} test images",
    )


def _photos() -> list[Image.Image]:
    """china.jpg and flower.jpg (scikit-learn), then grace_hopper.jpg (matplotlib), as RGB images."""
    try:
        from matplotlib import cbook
        from sklearn.datasets import load_sample_image
    except ImportError as exc:
        need = "--int8-images photos needs scikit-learn and matplotlib (pip install -e '.[dev]')"
        print(f"{need}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_MISSING_DEPENDENCY) from exc
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as hopper:
        photos.append(hopper.convert("RGB"))
    return photos


def _crops(photos: list[Image.Image], count: int, size: int, seed: int) -> np.ndarray:
    """`count` square crops of `photos` in turn, a third of the shorter side to all of it, half of them
    mirrored, each resized to `size` and normalised: natural images at many scales, the same every run."""
    rng = np.random.default_rng(seed)
    exact = Preprocessing(resize=size, crop=size)
    rows = []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        side = int(rng.integers(min(width, height) // 3, min(width, height) + 1))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rows.append(preprocess_image(crop, exact))
    return np.stack(rows).astype(np.float32)


def with_noise(images: np.ndarray, std: float = NOISE_STD, seed: int = 0) -> np.ndarray:
    """`images` plus Gaussian noise of `std` (the sensitivity check's input)."""
    rng = np.random.default_rng(seed)
    return (images + rng.normal(0.0, std, images.shape)).astype(np.float32)
