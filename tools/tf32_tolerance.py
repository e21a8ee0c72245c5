"""Measure what TF32 does to GhostNet logits: the statistics behind the `--tf32` gate (ghost_deploy/precision/tf32.py).

    python tools/tf32_tolerance.py [--images 360] [--synthetic-images 64] [--skip-synthetic]

For each model (the tiny test fixture, the shipped digits model, and realistic random-weight GhostNets V1/V2/V3
at 224 x 224 with 1000 classes) the FP32 ONNX runs on ONNX Runtime twice on the same images: as it is, and
with every FP32 input of its Conv/Gemm/MatMul rounded to TF32 by the TensorRT simulator's rounding (what a
simulated TF32 engine executes; exact round-to-nearest-even to 10 mantissa bits, tested bit for bit in
tests/testing/test_trtsim_rules.py). It prints, in units of TF32's unit roundoff u = 2**-11:

    A = max |TF32 - FP32| / (u * max |FP32 logit|)   the gate's own max-abs statistic (rtol form)
    B = (1 - min cosine) / u**2                        the gate's per-sample cosine statistic
    flips                                              samples whose top-1 class TF32 changes

These are SIMULATED figures (TF32 arithmetic made exact on the CPU), not a GPU's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
U = 2.0**-11


def _batches(arrays: np.ndarray, size: int = 16) -> Iterable[np.ndarray]:
    for start in range(0, len(arrays), size):
        yield arrays[start : start + size]


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def statistics(onnx_bytes: bytes, inputs: np.ndarray) -> dict[str, float]:
    """A, B and flips (see the module docstring) of one FP32 ONNX on `inputs` (N x 3 x S x S)."""
    from ghost_deploy.testing.trtsim.tf32 import tf32_executable

    fp32, tf32 = _session(onnx_bytes), _session(tf32_executable(onnx_bytes))
    ref = np.concatenate([fp32.run(None, {"input": b})[0] for b in _batches(inputs)])
    out = np.concatenate([tf32.run(None, {"input": b})[0] for b in _batches(inputs)])
    cosine = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    return {
        "samples": float(len(ref)),
        "A": float(np.abs(out - ref).max() / (U * np.abs(ref).max())),
        "A_per_sample_p50": float(np.median(np.abs(out - ref).max(1) / (U * np.abs(ref).max(1)))),
        "B": float((1.0 - cosine.min()) / U**2),
        "flips": float((out.argmax(1) != ref.argmax(1)).sum()),
    }


def checkpoint_case(path: Path, limit: int) -> tuple[bytes, np.ndarray]:
    """The product's FP32 ONNX of a checkpoint and its verification images (the model's own test split)."""
    from ghost_deploy.backends.onnx.export import onnx_from_module
    from ghost_deploy.backends.onnx.simplify import simplify_onnx
    from ghost_deploy.config import BatchSpec
    from ghost_deploy.model.checkpoint import load_model
    from ghost_deploy.stages.evaldata import eval_data

    loaded = load_model(path)
    model, _ = simplify_onnx(onnx_from_module(loaded.module, loaded.info.input_size, BatchSpec(None, (1, 16, 16))))
    arrays = np.stack([s.array for s in eval_data(loaded.info, path.parent, None, limit)])
    return bytes(model.SerializeToString()), arrays


def synthetic_case(version: str, count: int, size: int = 224) -> tuple[bytes, np.ndarray]:
    """A realistic random-weight GhostNet (1000 classes) and `count` digit images resized to `size`."""
    from ghost_deploy.backends.onnx.export import onnx_from_module
    from ghost_deploy.backends.onnx.simplify import simplify_onnx
    from ghost_deploy.config import BatchSpec
    from ghost_deploy.data.inputs import ImageFolder
    from ghost_deploy.data.preprocess import Preprocessing
    from ghost_deploy.model.synthetic import realistic_ghostnet

    folder = ImageFolder(
        REPO / "calibration" / "digits" / "test", Preprocessing(resize=size, crop=size), None, count, 0
    )
    arrays = np.stack([s.array for s in folder])
    module = realistic_ghostnet(arrays[:32], width=1.0, num_classes=1000, version=version)
    model, _ = simplify_onnx(onnx_from_module(module, size, BatchSpec(None, (1, 16, 16))))
    return bytes(model.SerializeToString()), arrays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=360, help="test-split images per digits model")
    parser.add_argument("--synthetic-images", type=int, default=64, help="images per 224 x 224 model")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the two trained digits models")
    args = parser.parse_args()
    cases = {
        "tiny fixture (0.25x, 32 px)": lambda: checkpoint_case(
            REPO / "tests/fixtures/ghostnet_025_digits32.pt", args.images
        ),
        "shipped digits model": lambda: checkpoint_case(REPO / "models/ghostnet_digits.pt", args.images),
    }
    if not args.skip_synthetic:
        for version in ("v1", "v2", "v3"):
            cases[f"GhostNet-{version} 1.0x 224 px (random)"] = lambda v=version: synthetic_case(
                v, args.synthetic_images
            )
    print("SIMULATED TF32 (the TensorRT simulator's exact rounding on ONNX Runtime CPU); u = 2**-11")
    print(f"{'model':40s} {'samples':>7s} {'A':>7s} {'A p50':>7s} {'B':>9s} {'flips':>5s}")
    worst = {"A": 0.0, "B": 0.0}
    for name, make in cases.items():
        stats = statistics(*make())
        worst = {k: max(worst[k], stats[k]) for k in worst}
        print(
            f"{name:40s} {stats['samples']:7.0f} {stats['A']:7.2f} {stats['A_per_sample_p50']:7.2f} "
            f"{stats['B']:9.1f} {stats['flips']:5.0f}"
        )
    print(f"largest A = {worst['A']:.2f}, largest B = {worst['B']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
