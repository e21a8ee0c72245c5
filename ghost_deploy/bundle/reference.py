"""The bundle's reference set: a few dozen preprocessed inputs and what the FP32 ONNX gave on them when packed.

Every engine a device uses (the packed one, or one built there) is checked against it before any result is
returned. Inputs are stored as float16 `.npy` (half the bytes) and the outputs were computed on exactly those
values (float16 widened to float32), so the comparison carries no storage error. The count adapts to the
input size: at most MAX_BYTES of inputs, between MIN_SAMPLES and SAMPLES inputs (64 at the shipped model's
64 x 64, 16 at 224 x 224 would be 4.8 MB).

Read back with `numpy.load(allow_pickle=False)`, bounded by the manifest's file sizes, and checked against
the manifest (shapes, dtypes, finite values) before use: a reference set is input like any other.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ghost_deploy.bundle.errors import ManifestError
from ghost_deploy.data.inputs import Sample

INPUTS = "reference.inputs.npy"
OUTPUTS = "reference.outputs.npy"
SAMPLES = 64
MIN_SAMPLES = 16
MAX_BYTES = 6 << 20


def sample_count(chw: tuple[int, int, int]) -> int:
    """How many float16 inputs of this shape fit the bound (at least MIN_SAMPLES, at most SAMPLES)."""
    per = 2 * chw[0] * chw[1] * chw[2]
    return max(MIN_SAMPLES, min(SAMPLES, MAX_BYTES // per))


def reference_inputs(manifest: dict[str, Any], source: dict[str, Any] | None, count: int) -> tuple[Any, dict[str, Any]]:
    """Where the reference inputs come from: the verification images the export used (`source`, its report's
    `verification.data`) when they are on this machine, else the shipped digit images, else seeded random
    inputs; (an iterable of samples, a description for the manifest)."""
    from ghost_deploy.data.inputs import ImageFolder, RandomInputs
    from ghost_deploy.data.preprocess import Preprocessing
    from ghost_deploy.data.shipped import shipped_images

    pre = Preprocessing.from_dict(manifest["preprocessing"])
    root = Path(str((source or {}).get("root", "")))
    if (source or {}).get("root") and root.is_dir():
        folder = ImageFolder(root, pre, None, count, 0)
        return folder, {"kind": source.get("kind") if source else None, "images": len(folder), "from": root.name}
    shipped = shipped_images("test")
    if shipped is not None:
        folder = ImageFolder(shipped, pre, None, count, 0)
        return folder, {"kind": "shipped-test-images", "images": len(folder), "note": _FALLBACK}
    chw = tuple(manifest["input"]["shape"][1:])
    return RandomInputs(count, chw, 0), {"kind": "random", "images": 0, "note": _FALLBACK}  # type: ignore[arg-type]


_FALLBACK = "the export's verification images were not on the packing machine; these stand in for them"


def make_reference(fp32_onnx: Path, samples: Iterable[Sample], count: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs as float16, FP32 ONNX Runtime outputs on exactly those inputs) for up to `count` samples."""
    from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner

    rows = [s.array for s in itertools.islice(iter(samples), count)]
    inputs = np.stack(rows).astype(np.float16)
    widened = inputs.astype(np.float32)
    outputs = []
    with OnnxRuntimeRunner(fp32_onnx) as runner:
        spec = runner.input_specs()[0]
        out = runner.output_specs()[0].name
        step = spec.fixed_batch or len(widened)
        for start in range(0, len(widened), step):
            part = widened[start : start + step]
            count_here = len(part)
            if spec.fixed_batch and count_here < step:
                part = np.concatenate([part, np.repeat(part[-1:], step - count_here, axis=0)])
            outputs.append(np.asarray(runner.infer({spec.name: part})[out][:count_here], dtype=np.float32))
    return inputs, np.concatenate(outputs)


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy (no pickle)."""
    with path.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_reference(root: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(float32 inputs N x C x H x W, float32 outputs N x classes) of the bundle's reference set, checked."""
    entry = manifest.get("reference")
    if not isinstance(entry, dict):
        raise ManifestError("the bundle has no reference set: its engine cannot be verified on this device")
    inputs = _load(root / entry["inputs"], np.float16)
    outputs = _load(root / entry["outputs"], np.float32)
    shape = manifest["input"]["shape"]
    classes = manifest["output"]["shape"][-1]
    if inputs.ndim != 4 or list(inputs.shape[1:]) != list(shape[1:]):
        raise ManifestError(f"{entry['inputs']} has shape {list(inputs.shape)}; the model's input is {shape}")
    if outputs.shape != (len(inputs), classes):
        raise ManifestError(
            f"{entry['outputs']} has shape {list(outputs.shape)}; expected [{len(inputs)}, {classes}] (one row of "
            "logits per reference input)"
        )
    if not len(inputs) or not np.isfinite(inputs).all() or not np.isfinite(outputs).all():
        raise ManifestError("the bundle's reference set is empty or holds NaN or Inf; pack it again")
    return inputs.astype(np.float32), outputs


def _load(path: Path, dtype: type[np.generic]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ManifestError(f"{path.name} is not a .npy array ({str(exc)[:120]}); pack the bundle again") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype):
        raise ManifestError(f"{path.name} must hold {np.dtype(dtype).name} values; pack the bundle again")
    return array
