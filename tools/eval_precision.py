"""Accuracy of the reduced-precision targets of the shipped model (or --model, one trained on the same digits),
on its test split and on ten seeded jittered copies of it (shifts up to 4 pixels), ONNX Runtime CPU, against
the FP32 ONNX; `onnx-int8` once per calibration method.

    python tools/eval_precision.py [--model PATH] [--copies 10] [--shift 4] [--calib-methods minmax,entropy,...]
                                   [--targets onnx-int8,ort-int8,onnx-fp16] [--export-args "..."]

The plain test split has 359 images, a third of a point each: too coarse alone, hence the jittered copies.
Each target is built with `ghost-export` (calibrated on the calibration split); the previews it verifies
with (the Q/DQ graph; the FP16-rounding graph) are evaluated here on the 11 x 359 inputs. An `onnx-int8`
method that misses 99.5% agreement or loses more than 0.5 points of top-1 is built again with
`--auto-exclude`, and the row gives the layers kept in higher precision and the seconds the exclusion took.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.cli.main import export_main
from ghost_deploy.data.inputs import ImageFolder
from ghost_deploy.machine.cpu import int8_flags
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.precision.fp16 import fp16_preview
from ghost_deploy.stages.outputs import failed_path
from ghost_deploy.targets import CALIBRATION_METHODS

REPO = Path(__file__).resolve().parents[1]

MODEL = REPO / "models" / "ghostnet_digits.pt"


def _jittered(base: np.ndarray, copies: int, shift: int, fill: np.ndarray, seed: int = 0) -> np.ndarray:
    """`copies` shifted versions of every image (zero-padded with the background value), plus the original."""
    rng = np.random.default_rng(seed)
    out = [base]
    for _ in range(copies):
        batch = np.empty_like(base)
        for i, img in enumerate(base):
            dx, dy = rng.integers(-shift, shift + 1, size=2)
            moved = np.broadcast_to(fill, img.shape).copy()
            h, w = img.shape[1:]
            src = img[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
            moved[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
            batch[i] = moved
        out.append(batch)
    return np.concatenate(out)


def _logits(model: bytes, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    with OnnxRuntimeRunner(model, optimize=optimize) as runner:
        return np.concatenate([runner.infer({"input": x[i : i + 8]})["logits"] for i in range(0, len(x), 8)])


# what every --calib-method must reach on the 3949 inputs (the limits)
MIN_AGREEMENT = 0.995
MAX_DROP_POINTS = 0.5


def _export(args: argparse.Namespace, target: str, out: Path, extra: list[str]) -> dict[str, Any]:
    """Build one target with ghost-export; its exit code, the artifact it wrote (a run that failed its gates
    writes `NAME.failed.onnx`, evaluated all the same) and, for --auto-exclude, what was excluded and how fast."""
    for stale in (out, failed_path(out)):
        stale.unlink(missing_ok=True)
    code = export_main([str(args.model), "--target", target, "-o", str(out), "--dynamic-batch", "1:8:8", *extra])
    artifact = out if out.exists() else failed_path(out)
    report_file = Path(str(artifact) + ".json")
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    found = report.get("precision", {}).get("calibration", {}).get("auto_exclude")
    return {"code": code, "artifact": artifact, "auto_exclude": found}


def _row(name: str, got: np.ndarray, ref: np.ndarray, labels: np.ndarray, ref_acc: float, built: dict[str, Any]) -> str:
    """One printed row: agreement, top-1, drop, exit code, and the auto-exclusion when there was one."""
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    acc = float((got.argmax(1) == labels).mean())
    drop = 100 * (ref_acc - acc)
    ok = agree >= MIN_AGREEMENT and drop <= MAX_DROP_POINTS
    text = f"{name:<28} agreement {agree:.2%}  top-1 {acc:.2%}  drop {drop:+.2f} points  exit {built['code']}  "
    text += "meets" if ok else "misses"
    found = built.get("auto_exclude")
    if found:
        kept, seconds = len(found["excluded"]), found["seconds"]
        text += f"  auto-exclude: {kept} layers in {seconds:.1f} s ({found['ranking_method']})"
    return text


def _meets(got: np.ndarray, ref: np.ndarray, labels: np.ndarray, ref_acc: float) -> bool:
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return agree >= MIN_AGREEMENT and 100 * (ref_acc - float((got.argmax(1) == labels).mean())) <= MAX_DROP_POINTS


def main() -> None:
    """Build each target (onnx-int8 once per method), then print agreement and accuracy drop on the inputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="checkpoint (default: the shipped model)")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--shift", type=int, default=4)
    parser.add_argument("--targets", default="onnx-int8,ort-int8,onnx-fp16")
    parser.add_argument("--calib-methods", default=",".join(CALIBRATION_METHODS), help="for onnx-int8")
    parser.add_argument("--export-args", default="", help="extra ghost-export flags for onnx-int8")
    args = parser.parse_args()
    import onnx
    import torch

    info = ModelInfo.from_dict(torch.load(args.model, weights_only=True)["ghost_deploy"])
    pre = info.preprocessing
    test = ImageFolder(REPO / "calibration" / "digits" / "test", pre, info.labels)
    base = np.stack([s.array for s in test])
    labels = np.array([s.label for s in test] * (args.copies + 1))
    fill = ((0.0 - np.array(pre.mean)) / np.array(pre.std)).astype(np.float32)[:, None, None]
    x = _jittered(base, args.copies, args.shift, fill)
    print(f"CPU INT8 flags: {', '.join(f for f, on in int8_flags().items() if on) or 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_main([str(args.model), "-o", str(fp32_path), "--dynamic-batch", "1:8:8"])
        ref = _logits(fp32_path.read_bytes(), x)
        ref_acc = float((ref.argmax(1) == labels).mean())
        rows = [f"\n{len(x)} inputs ({len(base)} test images x {args.copies + 1}), FP32 top-1 {ref_acc:.2%}"]
        for target in args.targets.split(","):
            out = Path(tmp) / f"{target}.onnx"
            if target == "onnx-fp16":
                built = _export(args, target, out, [])
                got = _logits(fp16_preview(onnx.load(str(fp32_path))).SerializeToString(), x, optimize=False)
                rows.append(_row(target, got, ref, labels, ref_acc, built))
                continue
            methods = args.calib_methods.split(",") if target == "onnx-int8" else [""]
            for method in methods:
                extra = shlex.split(args.export_args) if target == "onnx-int8" else []
                extra += ["--calib-method", method] if method else []
                built = _export(args, target, out, extra)
                got = _logits(built["artifact"].read_bytes(), x)
                name = f"{target} {method or '(default)'} {' '.join(extra[:-2] if method else extra)}".rstrip()
                rows.append(_row(name, got, ref, labels, ref_acc, built))
                if not _meets(got, ref, labels, ref_acc) and "--auto-exclude" not in extra:
                    built = _export(args, target, out, [*extra, "--auto-exclude"])
                    got = _logits(built["artifact"].read_bytes(), x)
                    rows.append(_row(f"{name} --auto-exclude", got, ref, labels, ref_acc, built))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
