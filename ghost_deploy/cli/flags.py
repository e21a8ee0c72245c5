"""The flag groups that several commands share (model, verification, reduced precision, engines), and the
typed configurations built from them.

Each command's parser reads as a list of groups. Imports nothing heavy: `--help` stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ghost_deploy.config import (
    GATE_FLAGS,
    MAX_CLASSES,
    MAX_INPUT_SIZE,
    MAX_LATENCY_BATCH,
    MAX_SAMPLES,
    BatchSpec,
    EngineOptions,
    ExportConfig,
    Overrides,
    PrecisionConfig,
    Tolerances,
    check_number,
    parse_dynamic_batch,
)
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import read_bytes_limited
from ghost_deploy.report import Steps
from ghost_deploy.targets import CALIBRATION_METHODS, precision_of
from ghost_deploy.targets import target as target_of


def common(p: argparse.ArgumentParser) -> None:
    """--json, -q and -v, which every command takes."""
    p.add_argument("--json", action="store_true", help="print the JSON report on standard output")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no summary; errors (and --json) still print"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")


def steps(args: argparse.Namespace) -> Steps:
    """Where a command's progress goes: standard error, or nowhere with --quiet."""
    return Steps(quiet=bool(getattr(args, "quiet", False)))


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least `low` (and at most `high`), checked before anything is allocated."""

    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= MAX_NUMBER_CHARS else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"expected an integer, got {shown(text)}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def float_between(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] ((low, high] with `low_open`); NaN and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.nan
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {shown(text)}") from None
        inside = value > low if low_open else value >= low
        if not (math.isfinite(value) and inside and value <= high):
            bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {shown(text)}")
        return value

    return parse


def trt_version(text: str) -> str:
    """An argparse type: a TensorRT version MAJOR.MINOR[.PATCH[.BUILD]], each part at most a few digits."""
    if not _TRT_VERSION.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(
            f"expected a TensorRT version MAJOR.MINOR[.PATCH] of at most {MAX_VERSION_PART_DIGITS} digits a part, "
            f"such as 10.3.0, got {shown(text)}"
        )
    return text.strip()


def shown(text: str, limit: int = 40) -> str:
    """A value quoted for a one-line message, cut when long (a 5000-digit number is not repeated whole)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# No flag's number needs more characters; Python refuses int() of more than 4300 digits, and float() of a
# million digits takes a while: both are refused before they are converted.
MAX_NUMBER_CHARS = 100
MAX_VERSION_PART_DIGITS = 4  # the same bound as the calibration cache's reader
_TRT_VERSION = re.compile(rf"\d{{1,{MAX_VERSION_PART_DIGITS}}}(\.\d{{1,{MAX_VERSION_PART_DIGITS}}}){{1,3}}")
# TensorRT takes the workspace as a size_t of bytes: a 23-digit MiB count overflows it (TypeError on the device)
MAX_WORKSPACE_MIB = 1 << 20
MAX_RESIZE = 4096  # the same bound as Preprocessing's


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("architecture and preprocessing (override the checkpoint's metadata)")
    from ghost_deploy.model.variants import VARIANTS

    g.add_argument("--arch", help=f"variant name: {', '.join(VARIANTS)} (inferred from the keys when absent)")
    g.add_argument(
        "--num-classes", type=int_at_least(1, MAX_CLASSES), metavar="N", help="classes (default: from the classifier)"
    )
    g.add_argument(
        "--input-size",
        type=int_at_least(1, MAX_INPUT_SIZE),
        metavar="N",
        help=f"square input size, divisible by 32 (V2/V3: >= 64; at most {MAX_INPUT_SIZE})",
    )
    g.add_argument("--mean", metavar="R,G,B", help="normalisation mean (on 0..1 pixels)")
    g.add_argument("--std", metavar="R,G,B", help="normalisation std")
    g.add_argument("--resize", type=int_at_least(1, MAX_RESIZE), metavar="N", help="resize the shorter side to N")
    g.add_argument("--crop", type=int_at_least(1, MAX_RESIZE), metavar="N", help="centre crop (equals the input size)")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic"), help="resize filter (default: the model's)")
    g.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a pickled nn.Module or TorchScript file (unpickling can run arbitrary code)",
    )
    g.add_argument(
        "--allow-nonfinite-weights",
        action="store_true",
        help="load a checkpoint whose weights hold NaN or Inf (refused by default: its outputs cannot verify)",
    )


def add_verify_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "verification against ONNX Runtime CPU (the FP32 gate: the FP32 ONNX against PyTorch; in `verify`, the "
        "artifact, whatever its precision)"
    )
    g.add_argument(
        "--eval",
        type=Path,
        metavar="DIR",
        dest="eval_dir",
        help="images to verify on; class sub-folders named like the labels give accuracy",
    )
    g.add_argument(
        "--eval-limit",
        type=int_at_least(1, MAX_SAMPLES),
        default=500,
        metavar="N",
        help="use a seeded subset of at most N images (default 500)",
    )
    fp32 = "FP32 gate"
    g.add_argument("--atol", type=float, metavar="X", help=f"{fp32}: max absolute logit error (default 1e-4)")
    g.add_argument(
        "--rtol",
        type=float,
        metavar="X",
        help=f"{fp32}: added to --atol per unit of the largest reference logit (default 3e-5)",
    )
    g.add_argument(
        "--min-cosine", type=float, metavar="X", help=f"{fp32}: minimum per-sample cosine similarity (default 0.9999)"
    )
    g.add_argument("--min-agreement", type=float, metavar="X", help=f"{fp32}: minimum top-1 agreement (default 0.99)")
    add_gate_flags(p)


def add_gate_flags(p: argparse.ArgumentParser) -> None:
    """The FP16 and INT8 gates' limits, one flag per precision and metric (defaults: Tolerances.for_precision)."""
    g = p.add_argument_group(
        "reduced-precision gates (the FP16 or INT8 model against the FP32 ONNX, on the verification inputs; "
        "FP16: onnx-fp16, trt-fp16; INT8: onnx-int8, ort-int8, trt-int8; --max-accuracy-drop sets both's "
        "accuracy limit)"
    )
    fp16, int8 = Tolerances.for_precision("fp16"), Tolerances.for_precision("int8")
    g.add_argument(
        "--fp16-min-cosine",
        type=float,
        metavar="X",
        help=f"lowest per-sample cosine similarity of FP16 logits (default {fp16.min_cosine}: FP16 rounding "
        "alone moves no logit far)",
    )
    g.add_argument(
        "--fp16-min-agreement",
        type=float,
        metavar="X",
        help=f"minimum FP16 top-1 agreement (default {fp16.min_agreement})",
    )
    g.add_argument(
        "--int8-min-cosine",
        type=float,
        metavar="X",
        help=f"minimum MEAN cosine similarity of INT8 logits (default {int8.min_cosine}: quantisation noise moves "
        "single samples, so the mean is judged)",
    )
    g.add_argument(
        "--int8-min-agreement",
        type=float,
        metavar="X",
        help=f"minimum INT8 top-1 agreement (default {int8.min_agreement})",
    )


def add_precision_flags(p: argparse.ArgumentParser, export: bool = True) -> None:
    g = p.add_argument_group("reduced precision (targets onnx-fp16, onnx-int8, ort-int8)")
    g.add_argument(
        "--calib",
        type=Path,
        metavar="PATH",
        help="calibration images (a folder, searched recursively) or an .npy/.npz of preprocessed "
        "batches; default: the shipped model's calibration split",
    )
    g.add_argument("--calib-size", type=int_at_least(1, MAX_SAMPLES), metavar="N", help="a seeded subset of N inputs")
    g.add_argument(
        "--calib-method",
        choices=CALIBRATION_METHODS,
        default=None,
        help="activation ranges (default minmax, max |x|, for every target; entropy is TensorRT's "
        "EntropyCalibration2, percentile clips at --percentile, mse minimises the squared quantisation error; "
        "onnx-fp16 always uses minmax)",
    )
    g.add_argument("--percentile", type=float, default=99.99, metavar="P", help="for --calib-method percentile")
    if not export:  # sensitivity ranks layers on calibration data: the build options below do not apply
        p.set_defaults(
            exclude_nodes="",
            exclude_op_types="",
            high_precision=None,
            trt_version=None,
            calib_cache=None,
            max_accuracy_drop=None,
            auto_exclude=False,
        )
        return
    g.add_argument("--exclude-nodes", default="", metavar="A,B", help="node names kept in higher precision")
    g.add_argument("--exclude-op-types", default="", metavar="A,B", help="op types kept in higher precision")
    g.add_argument(
        "--high-precision",
        choices=("fp32", "fp16"),
        default=None,
        help="dtype of what a Q/DQ graph leaves unquantized (onnx-int8: default fp32; trt-int8: default what the "
        "TensorRT version builds, fp16 on 11; given, it wins or is refused with the reason)",
    )
    g.add_argument(
        "--trt-version",
        type=trt_version,
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
        help="FP16 and INT8 gates: largest top-1 accuracy drop against FP32 on labelled inputs, in points "
        "(default 1.0); --auto-exclude also holds the calibration data's agreement to 100 - POINTS %%",
    )
    g.add_argument(
        "--auto-exclude",
        action="store_true",
        help="keep the INT8-sensitive layers in higher precision until the calibration data meets the INT8 "
        "gate: mean cosine >= --int8-min-cosine and top-1 agreement >= the larger of --int8-min-agreement and "
        "100 - --max-accuracy-drop %% (each layer is chosen for the metric that fails)",
    )


def add_latency_flags(p: argparse.ArgumentParser) -> None:
    """--latency-batch: the batch at which ort-int8's FP32/INT8 boundary is timed on this CPU."""
    g = p.add_argument_group("ort-int8 on this CPU")
    g.add_argument(
        "--latency-batch",
        type=int_at_least(1, MAX_LATENCY_BATCH),
        metavar="N",
        help="ort-int8: time candidate FP32->INT8 boundaries (all INT8, FP32 only and a few between) on this CPU "
        "at batch N and keep the fastest that passes the accuracy gate (default: the ONNX's batch, 1 unless "
        "--batch says otherwise)",
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
    g.add_argument(
        "--workspace",
        type=int_at_least(1, MAX_WORKSPACE_MIB),
        metavar="MIB",
        help=f"builder workspace in MiB (at most {MAX_WORKSPACE_MIB}, a TiB)",
    )
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
    g.add_argument(
        "--tf32",
        action="store_true",
        help="let FP32 layers use TF32 on Ampere/Orin and newer (faster, about 3 decimal digits): TensorRT's "
        "default, cleared without this flag; the trt-fp32 gate then allows TF32's rounding",
    )


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def overrides(args: argparse.Namespace) -> Overrides:
    """Architecture and preprocessing overrides from the model flags."""
    from ghost_deploy.data.preprocess import parse_triple

    labels = None
    if args.labels is not None:
        try:
            text = read_bytes_limited(args.labels, 64 << 20, "--labels").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"cannot read --labels {args.labels}: not UTF-8 text ({exc.reason})") from None
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    return Overrides(
        arch=args.arch,
        num_classes=args.num_classes,
        input_size=args.input_size,
        resize=args.resize,
        crop=args.crop,
        mean=parse_triple(args.mean) if args.mean else None,
        std=parse_triple(args.std) if args.std else None,
        interpolation=args.interpolation,
        labels=labels,
    )


def tolerances(args: argparse.Namespace, precision: str = "fp32", base: Tolerances | None = None) -> Tolerances:
    """`base` (default: the precision's default tolerances) with the verification flags applied (`verify`: the
    FP32 flags set any precision's limits, as they always did; the precision's own flags win)."""
    changes = {
        "max_abs": args.atol,
        "rtol": args.rtol,
        "min_cosine": args.min_cosine,
        "min_agreement": args.min_agreement,
    }
    tol = dataclasses.replace(
        base or Tolerances.for_precision(precision), **{k: v for k, v in changes.items() if v is not None}
    )
    return _gate_flags_applied(args, precision, tol)


def _gate_flags_applied(args: argparse.Namespace, precision: str, tol: Tolerances) -> Tolerances:
    """`tol` with the --fp16-* or --int8-* limits given for `precision`, each checked under its own name."""
    if precision not in ("fp16", "int8"):
        return tol
    changes = {}
    for field, flag in GATE_FLAGS[precision].items():
        value = getattr(args, flag[2:].replace("-", "_"), None) if flag.startswith(f"--{precision}-") else None
        if value is not None:
            check_number(value, flag, 0.0, 1.0, low_open=field == "min_cosine")
            changes[field] = value
    return dataclasses.replace(tol, **changes)


def precision_config(args: argparse.Namespace) -> PrecisionConfig:
    """How to calibrate and quantize, from the precision flags (the target's default calibration)."""
    check_number(args.max_accuracy_drop, "--max-accuracy-drop (points)", 0.0, 100.0)
    return PrecisionConfig(
        calib_method=args.calib_method or target_of(args.target).calibration or "minmax",
        percentile=args.percentile,
        exclude_nodes=names(args.exclude_nodes),
        exclude_op_types=names(args.exclude_op_types),
        high_precision=args.high_precision,
        trt_version=args.trt_version,
        calib_cache=args.calib_cache,
        auto_exclude=args.auto_exclude,
        auto_exclude_agreement=1.0 - (args.max_accuracy_drop if args.max_accuracy_drop is not None else 1.0) / 100,
        latency_batch=getattr(args, "latency_batch", None),  # export only
    )


def precision_tolerances(args: argparse.Namespace) -> Tolerances | None:
    """The reduced-precision gate of the target (None for FP32 targets), with --max-accuracy-drop applied."""
    precision = precision_of(args.target)
    for other in ("fp16", "int8"):  # a bad value is refused even where the target's precision does not read it
        _gate_flags_applied(args, other, Tolerances.for_precision(other))
        given = [f for f in GATE_FLAGS[other].values() if f.startswith(f"--{other}-") and _given(args, f)]
        if other != precision and given:  # never ignored silently: the user meant some gate
            own = [f for f in GATE_FLAGS.get(precision, {}).values() if f.startswith(f"--{precision}-")]
            instead = f"use {' / '.join(own)}" if own else "an FP32 target is judged by --atol, --rtol, --min-cosine"
            name = other.upper()
            raise InputError(
                f"{given[0]} sets the {name} preview's limit, and --target {args.target} has no {name} preview "
                f"({precision.upper()}): drop it, or {instead}"
            )
    if precision == "fp32":
        return None
    tol = Tolerances.for_precision(precision)
    if args.max_accuracy_drop is not None:
        tol = dataclasses.replace(tol, max_accuracy_drop=args.max_accuracy_drop / 100.0)
    return _gate_flags_applied(args, precision, tol)


def _given(args: argparse.Namespace, flag: str) -> bool:
    """Whether the option `flag` was given on the command line (its value is not None)."""
    return getattr(args, flag[2:].replace("-", "_"), None) is not None


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """Builder options from the engine flags."""
    return EngineOptions(
        int8_mode=args.int8_mode,
        workspace_mib=args.workspace,
        timing_cache=args.timing_cache,
        optimization_level=args.builder_optimization_level,
        hardware_compatibility=args.hardware_compatibility,
        version_compatible=args.version_compatible,
        dla_core=args.dla_core,
        tf32=args.tf32,
    )


def batch_spec(args: argparse.Namespace) -> BatchSpec | None:
    """--dynamic-batch or --batch, None when neither was given."""
    if getattr(args, "dynamic_batch", None):
        return BatchSpec(None, parse_dynamic_batch(args.dynamic_batch))
    if getattr(args, "batch", None):
        return BatchSpec(args.batch)
    return None


def export_config(args: argparse.Namespace, command: Sequence[str]) -> ExportConfig:
    """Everything an export (or a sensitivity ranking) was asked to do, from its flags."""
    return ExportConfig(
        target=args.target,
        output=args.output,
        overrides=overrides(args),
        batch=batch_spec(args),
        opset=args.opset,
        eval_dir=args.eval_dir,
        eval_limit=args.eval_limit,
        tolerances=tolerances(args),
        trust=args.trust_checkpoint,
        command=tuple(command),
        calib=args.calib,
        calib_size=args.calib_size,
        precision=precision_config(args),
        precision_tolerances=precision_tolerances(args),
        engine=engine_options(args) if hasattr(args, "int8_mode") else EngineOptions(),
        allow_nonfinite_weights=args.allow_nonfinite_weights,
    )
