"""The flag groups that several commands share (model, verification, reduced precision, engines).

Kept apart from `cli.py` so that each command's parser reads as a list of groups. Imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("architecture and preprocessing (override the checkpoint's metadata)")
    from ghost_deploy.variants import VARIANTS

    g.add_argument("--arch", help=f"variant name: {', '.join(VARIANTS)} (inferred from the keys when absent)")
    g.add_argument("--num-classes", type=int_at_least(1), metavar="N")
    g.add_argument(
        "--input-size", type=int_at_least(1), metavar="N", help="square input size, divisible by 32 (V2/V3: >= 64)"
    )
    g.add_argument("--mean", metavar="R,G,B", help="normalisation mean (on 0..1 pixels)")
    g.add_argument("--std", metavar="R,G,B", help="normalisation std")
    g.add_argument("--resize", type=int_at_least(1), metavar="N", help="resize the shorter side to N")
    g.add_argument("--crop", type=int_at_least(1), metavar="N", help="centre crop (equals the input size)")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic"))
    g.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a pickled nn.Module or TorchScript file (unpickling can run arbitrary code)",
    )


def add_verify_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("verification against ONNX Runtime CPU")
    g.add_argument(
        "--eval",
        type=Path,
        metavar="DIR",
        dest="eval_dir",
        help="images to verify on; class sub-folders named like the labels give accuracy",
    )
    g.add_argument(
        "--eval-limit",
        type=int_at_least(1),
        default=500,
        metavar="N",
        help="use a seeded subset of at most N images (default 500)",
    )
    g.add_argument("--atol", type=float, metavar="X", help="max absolute logit error (FP32 default 1e-4)")
    g.add_argument(
        "--rtol",
        type=float,
        metavar="X",
        help="added to --atol per unit of the largest reference logit (FP32 default 1e-5)",
    )
    g.add_argument("--min-cosine", type=float, metavar="X", help="minimum cosine similarity (FP32 default 0.9999)")
    g.add_argument("--min-agreement", type=float, metavar="X", help="minimum top-1 agreement (FP32 default 0.99)")


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reduced precision (targets onnx-fp16, onnx-int8, ort-int8)")
    g.add_argument(
        "--calib",
        type=Path,
        metavar="PATH",
        help="calibration images (a folder, searched recursively) or an .npy/.npz of preprocessed "
        "batches; default: the shipped model's calibration split",
    )
    g.add_argument("--calib-size", type=int_at_least(1), metavar="N", help="a seeded subset of N inputs")
    g.add_argument(
        "--calib-method",
        choices=("entropy", "minmax", "percentile"),
        default=None,
        help="activation ranges (default: entropy for onnx-int8, as TensorRT's EntropyCalibration2; minmax for "
        "ort-int8, as ONNX Runtime's quantize_static; onnx-fp16 always uses minmax)",
    )
    g.add_argument("--percentile", type=float, default=99.99, metavar="P", help="for --calib-method percentile")
    g.add_argument("--exclude-nodes", default="", metavar="A,B", help="node names kept in higher precision")
    g.add_argument("--exclude-op-types", default="", metavar="A,B", help="op types kept in higher precision")
    g.add_argument(
        "--high-precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="dtype of what is not quantized in onnx-int8 (fp16 for TensorRT 11)",
    )
    g.add_argument(
        "--trt-version",
        metavar="X.Y.Z",
        help="version in the calibration cache header (default: installed TensorRT, else 10.3)",
    )
    g.add_argument(
        "--calib-cache",
        type=Path,
        metavar="FILE",
        help="build onnx-int8 from a TensorRT calibration cache instead of calibrating",
    )
    g.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="largest top-1 drop against FP32, in points (default 1.0)",
    )
    g.add_argument(
        "--auto-exclude",
        action="store_true",
        help="keep the INT8-sensitive layers in higher precision until the calibration data agrees with FP32 "
        "within --max-accuracy-drop",
    )


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT engines (targets trt-fp32, trt-fp16, trt-int8)")
    g.add_argument(
        "--int8-mode",
        choices=("explicit", "implicit"),
        default="explicit",
        help="explicit: the Q/DQ graph (default); implicit: a calibrator reading the CPU-made cache "
        "(TensorRT 8.5 to 10 only)",
    )
    g.add_argument("--workspace", type=int_at_least(1), metavar="MIB", help="builder workspace in MiB")
    g.add_argument("--timing-cache", type=Path, metavar="FILE", help="timing cache, loaded and saved back")
    g.add_argument("--builder-optimization-level", type=int, metavar="0-5", help="TensorRT 8.6+")
    g.add_argument(
        "--hardware-compatibility",
        choices=("none", "ampere+", "same_compute_capability"),
        default="none",
        help="build for other GPUs of a level (TensorRT 8.6+)",
    )
    g.add_argument("--version-compatible", action="store_true", help="runs on newer TensorRT runtimes (8.6+)")
    g.add_argument("--dla-core", type=int, metavar="N", help="Jetson DLA core, with GPU fallback")
