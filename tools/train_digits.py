"""Train the shipped default model: GhostNet (width 0.5) on scikit-learn's handwritten digits at 64x64.

Steps, all deterministic:

1. Write the 1797 real 8x8 digit images of `sklearn.datasets.load_digits()` as 8-bit grayscale PNG files
   (pixel value * 255 / 16, rounded; nothing else) into `<data>/{train,calibration,test}/<digit>/<index>.png`,
   split stratified by class with a fixed seed into about 70% / 10% / 20%. Files that already exist with the
   same pixels are left untouched, so the committed image set is reproduced as it is.
2. Train `GhostNet(num_classes=10, width=0.5)` on the train part, read back from the PNG files with
   `load_rgb` and `preprocess_image` (the same code that verification and calibration use), with small random
   affine augmentation applied to the PIL image before `preprocess_image`.
3. Re-estimate the BatchNorm statistics on the un-augmented train images, report top-1 on the test part
   in eval mode, and save the checkpoint with its `ghost_deploy` metadata.

Usage (from the repository root; reproduces models/ghostnet_digits.pt):

    python tools/train_digits.py

Smoke test: `python tools/train_digits.py --limit 50 --epochs 1 --output /tmp/m.pt --data /tmp/digits`.

Other architectures on the same data (written to models/<arch>_digits.pt, not shipped):

    python tools/train_digits.py --arch ghostnetv2_100
    python tools/train_digits.py --arch ghostnetv3_100
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ghost_deploy.data.preprocess import Preprocessing, load_rgb, preprocess_image
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import check_writable
from ghost_deploy.model.checkpoint import save_checkpoint
from ghost_deploy.model.ghostnet import GhostNet
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.model.variants import Variant, get_variant, variant_for_width

REPO_ROOT = Path(__file__).resolve().parent.parent

SPLITS = ("train", "calibration", "test")
# Fractions of each class that go to calibration and test; the rest is train (about 70 / 10 / 20).
CALIBRATION_FRACTION = 0.1
TEST_FRACTION = 0.2
# The split has its own seed, independent of --seed, so retraining with another seed never reshuffles the
# committed image set.
SPLIT_SEED = 20240607
LABELS = tuple("0123456789")
INPUT_SIZE = 64
BATCH_SIZE = 64
FILE_PATTERN = re.compile(r"^\d{4}\.png$")
THREADS = 2
DEFAULT_ARCH = "ghostnet_050"
Sample = tuple[Image.Image, int]  # an RGB image as `load_rgb` returns it, and its class index


# ----------------------------------------------------------------------------------------------- image set


def digit_pixels(images: np.ndarray) -> np.ndarray:
    """The 0..16 digit images as uint8 0..255: value * 255 / 16, rounded half up (no other change)."""
    return np.floor(images.astype(np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


def split_indices(targets: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Stratified, deterministic split of sample indices into train / calibration / test (no overlap)."""
    # numpy's legacy RandomState has a frozen stream, so the split stays the same across numpy versions
    rng = np.random.RandomState(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        members = members[rng.permutation(len(members))]
        n_test = round(len(members) * TEST_FRACTION)
        n_cal = round(len(members) * CALIBRATION_FRACTION)
        parts["test"].extend(members[:n_test].tolist())
        parts["calibration"].extend(members[n_test : n_test + n_cal].tolist())
        parts["train"].extend(members[n_test + n_cal :].tolist())
    return {name: sorted(idx) for name, idx in parts.items()}


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG without optional chunks, so the bytes depend only on the pixels."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _same_pixels(path: Path, pixels: np.ndarray) -> bool:
    """Whether `path` is a grayscale image with exactly these pixels (an unreadable file is not)."""
    try:
        with Image.open(path) as img:
            return img.mode == "L" and np.array_equal(np.asarray(img), pixels)
    except OSError:
        return False


def write_image_set(data_dir: Path, pixels: np.ndarray, targets: np.ndarray) -> dict[str, int]:
    """Write every sample to its split folder; skip files with the same pixels; remove stale split files."""
    expected: dict[Path, int] = {}
    for split, indices in split_indices(targets).items():
        for i in indices:
            expected[data_dir / split / str(int(targets[i])) / f"{i:04d}.png"] = i
    counts = {"written": 0, "unchanged": 0, "removed": 0}
    for path, i in expected.items():
        if path.is_file() and _same_pixels(path, pixels[i]):
            counts["unchanged"] += 1
            continue
        # a plain write (not atomic) keeps the usual file mode; an interrupted write fails the pixel check above
        # on the next run and is written again
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(pixels[i]))
        counts["written"] += 1
    # A file of our naming pattern that the split does not list would make parts overlap: remove it
    for split in SPLITS:
        for path in sorted((data_dir / split).glob("*/*.png")):
            if FILE_PATTERN.match(path.name) and path not in expected:
                path.unlink()
                counts["removed"] += 1
    return counts


def prepare_images(data_dir: Path) -> dict[str, int]:
    """Load scikit-learn's digits and write them as PNG files under `data_dir`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return write_image_set(data_dir, digit_pixels(digits.images), np.asarray(digits.target))


def load_split(data_dir: Path, split: str) -> list[Sample]:
    """All (RGB image, label) pairs of one split folder, read with `load_rgb`, in a fixed order."""
    samples = []
    for label, name in enumerate(LABELS):
        for path in sorted((data_dir / split / name).glob("*.png")):
            samples.append((load_rgb(path), label))
    if not samples:
        raise SystemExit(f"no images in {data_dir / split}; run without --data or check the folder")
    return samples


# ---------------------------------------------------------------------------------------- preprocessing


def channel_stats(images: Sequence[Image.Image], size: int) -> tuple[float, float]:
    """Mean and std of the resized images in [0, 1], rounded to 3 decimals (gray, so one value for R,G,B)."""
    plain = Preprocessing(resize=size, crop=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    arr = np.stack([preprocess_image(img, plain)[0] for img in images]).astype(np.float64)
    return round(float(arr.mean()), 3), round(float(arr.std()), 3)


def augment(img: Image.Image, pre: Preprocessing, rng: random.Random) -> Image.Image:
    """Random small rotation, scale and shift of the digit, at the network's resolution.

    The image is first resized exactly as `preprocess_image` would resize it, so with the identity transform the
    result is the evaluation input; `preprocess_image` then finds nothing to resize and only normalises.
    """
    w, h = img.size
    scale = pre.resize / min(w, h)
    big = img.resize((max(pre.crop, round(w * scale)), max(pre.crop, round(h * scale))), _resample(pre))
    angle = math.radians(rng.uniform(-12.0, 12.0))
    zoom = rng.uniform(0.9, 1.1)
    shift_x, shift_y = rng.uniform(-4.0, 4.0), rng.uniform(-4.0, 4.0)
    # PIL wants the inverse map (output pixel -> input pixel), about the image centre
    cx, cy = big.width / 2.0, big.height / 2.0
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    a, b, d, e = cos, sin, -sin, cos
    c = cx - a * (cx + shift_x) - b * (cy + shift_y)
    f = cy - d * (cx + shift_x) - e * (cy + shift_y)
    return big.transform(
        big.size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=_resample(pre), fillcolor=(0, 0, 0)
    )


def _resample(pre: Preprocessing) -> Image.Resampling:
    """The PIL filter that `preprocess_image` uses for `pre.interpolation`."""
    return {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[pre.interpolation]


def to_tensor(images: Sequence[Image.Image], pre: Preprocessing) -> torch.Tensor:
    """Preprocess PIL images with `preprocess_image` into an NCHW float tensor."""
    return torch.from_numpy(np.stack([preprocess_image(img, pre) for img in images]))


# --------------------------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and fix the CPU thread count (results depend on it)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    samples: list[Sample],
    pre: Preprocessing,
    rng: random.Random,
    schedule: dict[str, Any],
) -> tuple[float, float]:
    """One pass over shuffled, augmented samples; returns mean loss and train accuracy."""
    model.train()
    order = list(range(len(samples)))
    rng.shuffle(order)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(order), BATCH_SIZE):
        batch = [samples[i] for i in order[start : start + BATCH_SIZE]]
        x = to_tensor([augment(img, pre, rng) for img, _ in batch], pre)
        y = torch.tensor([label for _, label in batch])
        for group in opt.param_groups:
            group["lr"] = lr_at(schedule["step"], schedule["total"], schedule["warmup"], schedule["peak"])
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule["step"] += 1
        loss_sum += float(loss.detach()) * len(batch)
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(samples), correct / len(samples)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, samples: list[Sample], pre: Preprocessing) -> None:
    """Replace BatchNorm running statistics by exact averages over the un-augmented images.

    Training saw augmented images with a running (momentum) average; the exported eval-mode model sees clean
    ones, so its statistics should come from those.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    for start in range(0, len(samples), BATCH_SIZE * 2):
        model(to_tensor([img for img, _ in samples[start : start + BATCH_SIZE * 2]], pre))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, samples: list[Sample], pre: Preprocessing) -> float:
    """Top-1 accuracy in eval mode on un-augmented images."""
    model.eval()
    correct = 0
    for start in range(0, len(samples), 256):
        batch = samples[start : start + 256]
        logits = model(to_tensor([img for img, _ in batch], pre))
        correct += int((logits.argmax(1) == torch.tensor([label for _, label in batch])).sum())
    return correct / len(samples)


def fit(
    model: nn.Module,
    train: list[Sample],
    calibration: list[Sample],
    pre: Preprocessing,
    epochs: int,
    seed: int,
    lr: float,
) -> None:
    """AdamW with warm-up and cosine decay; prints loss, train and calibration accuracy per epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(train) / BATCH_SIZE)
    total = epochs * steps_per_epoch
    schedule: dict[str, Any] = {"step": 0, "total": total, "warmup": min(steps_per_epoch, total), "peak": lr}
    rng = random.Random(seed)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss, acc = train_epoch(model, opt, train, pre, rng, schedule)
        # calibration accuracy is for monitoring only; the saved model is the last epoch's
        cal = evaluate(model, calibration, pre)
        print(
            f"epoch {epoch:3d}/{epochs}  loss {loss:.4f}  train acc {acc:.4f}  calibration acc {cal:.4f}  "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO_ROOT / "calibration" / "digits",
        help="image set folder, written or checked first (default: <repo>/calibration/digits)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="checkpoint to write (default: <repo>/models/ghostnet_digits.pt for the default architecture, "
        "else <repo>/models/<arch>_digits.pt)",
    )
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    parser.add_argument("--seed", type=int, default=0, help="training seed; the split has its own (default: 0)")
    parser.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        help=f"architecture: ghostnet_*, ghostnetv2_* or ghostnetv3_* (default: {DEFAULT_ARCH}); V3 is trained "
        "with its re-parameterisable branches and saved unfused, as users' V3 checkpoints are",
    )
    parser.add_argument("--width", type=float, default=None, help="width multiplier (default: the architecture's)")
    parser.add_argument(
        "--input-size", type=int, default=INPUT_SIZE, help=f"square input size, a multiple of 32 (default {INPUT_SIZE})"
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default: 3e-3)")
    parser.add_argument("--limit", type=int, default=None, help="train on only N images (smoke test)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.epochs < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--epochs and --limit must be at least 1")
    try:
        variant = get_variant(args.arch)
    except InputError as exc:
        parser.error(str(exc))
    args.width = args.width or variant.width
    args.variant = variant_for_width(args.width, variant.family)
    if args.output is None:
        name = "ghostnet_digits.pt" if args.arch == DEFAULT_ARCH else f"{args.variant.name}_digits.pt"
        args.output = REPO_ROOT / "models" / name
    return args


def make_info(variant: Variant, pre: Preprocessing, data_dir: Path, output: Path, size: int = INPUT_SIZE) -> ModelInfo:
    """Metadata of the checkpoint; data folders are stored relative to the checkpoint file."""
    rel = Path(os.path.relpath(data_dir.resolve(), output.resolve().parent))
    return ModelInfo(
        arch=variant.name,
        width=variant.width,
        num_classes=len(LABELS),
        input_size=size,
        preprocessing=pre,
        labels=LABELS,
        data={split: (rel / split).as_posix() for split in SPLITS},
    )


def share_readable(path: Path) -> None:
    """Give the checkpoint the mode of a normally created file.

    `save_checkpoint` writes through a `tempfile.mkstemp` file, which is created 0600; a model that is mounted
    into a TensorRT container running as another user must be readable.
    """
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def training_record(args: argparse.Namespace, train_images: int, test_images: int, test_top1: float) -> dict[str, Any]:
    """How the checkpoint was made, in plain types (stored beside the metadata, read with weights_only=True)."""
    return {
        "arch": args.variant.name,
        "seed": args.seed,
        "split_seed": SPLIT_SEED,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "lr": args.lr,
        "train_images": train_images,
        "threads": THREADS,
        "torch": str(torch.__version__),  # a TorchVersion object would make weights_only loading fail
        "test_images": test_images,
        "test_top1": round(test_top1, 4),
        "command": shlex.join(["python", "tools/train_digits.py", *args.argv]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write the image set, train, evaluate on the test part and save the checkpoint."""
    args = parse_args(argv)
    check_writable(args.output)
    seed_everything(args.seed)
    started = time.perf_counter()
    counts = prepare_images(args.data)
    print(
        f"image set {args.data}: {counts['written']} written, {counts['unchanged']} unchanged, "
        f"{counts['removed']} stale removed",
        flush=True,
    )
    train, calibration, test = (load_split(args.data, split) for split in SPLITS)
    size = args.input_size
    mean, std = channel_stats([img for img, _ in train], size)
    pre = Preprocessing(resize=size, crop=size, mean=(mean,) * 3, std=(std,) * 3, interpolation="bilinear")
    print(f"train {len(train)}, calibration {len(calibration)}, test {len(test)} images; mean {mean}, std {std}")
    if args.limit is not None:
        train = random.Random(args.seed).sample(train, min(args.limit, len(train)))
    model = GhostNet(num_classes=len(LABELS), width=args.width, version=args.variant.family)
    fit(model, train, calibration, pre, args.epochs, args.seed, args.lr)
    recalibrate_batchnorm(model, train, pre)
    test_top1 = evaluate(model, test, pre)
    elapsed = time.perf_counter() - started
    print(f"test top-1 (eval mode, {len(test)} images): {test_top1:.4f}; total time {elapsed:.0f} s")
    training = training_record(args, len(train), len(test), test_top1)
    save_checkpoint(
        args.output, model, make_info(args.variant, pre, args.data, args.output, size), extra={"training": training}
    )
    share_readable(args.output)
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
