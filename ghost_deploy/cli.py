"""Command line: `ghost-deploy {export,verify}` and `ghost-export` (= `ghost-deploy export`).

Each command turns its arguments into one call of a public function. Imports nothing heavy at start-up, so
`--help` works without torch, TensorRT or pycuda.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ghost_deploy import __version__
from ghost_deploy.errors import EXIT_FAILURE, EXIT_OK, GhostDeployError, VerificationFailed

EXIT_CODES = """exit codes:
  0  success
  1  unexpected failure
  2  bad input or usage
  3  missing optional dependency (the message names the extra to install)
  4  a verification or accuracy gate failed (the report is still written)"""


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("architecture and preprocessing (override the checkpoint's metadata)")
    from ghost_deploy.variants import VARIANTS

    g.add_argument("--arch", help=f"variant name: {', '.join(VARIANTS)} (inferred from the keys when absent)")
    g.add_argument("--num-classes", type=_int_at_least(1), metavar="N")
    g.add_argument(
        "--input-size", type=_int_at_least(1), metavar="N", help="square input size, divisible by 32 (V2/V3: >= 64)"
    )
    g.add_argument("--mean", metavar="R,G,B", help="normalisation mean (on 0..1 pixels)")
    g.add_argument("--std", metavar="R,G,B", help="normalisation std")
    g.add_argument("--resize", type=_int_at_least(1), metavar="N", help="resize the shorter side to N")
    g.add_argument("--crop", type=_int_at_least(1), metavar="N", help="centre crop (equals the input size)")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic"))
    g.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a pickled nn.Module or TorchScript file (unpickling can run arbitrary code)",
    )


def _add_verify_flags(p: argparse.ArgumentParser) -> None:
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
        type=_int_at_least(1),
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the JSON report on standard output")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")


def build_export_parser(prog: str = "ghost-export") -> argparse.ArgumentParser:
    """The parser of `ghost-export` / `ghost-deploy export`."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a GhostNet checkpoint (or an ONNX file) to a simplified ONNX model, verified against "
        "ONNX Runtime on the CPU.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _fill_export_parser(p)
    return p


def _fill_export_parser(p: argparse.ArgumentParser) -> None:
    from ghost_deploy.pipeline import TARGETS

    p.add_argument("model", type=Path, metavar="MODEL", help="a .pt/.pth checkpoint or an .onnx file")
    p.add_argument("--target", default="onnx", choices=TARGETS, help="what to build (default onnx)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="PATH",
        help="the artifact (default <model stem>.<target>.onnx beside MODEL); the report is PATH.json",
    )
    b = p.add_mutually_exclusive_group()
    b.add_argument("--batch", type=_int_at_least(1), metavar="N", help="fixed batch size (default 1)")
    b.add_argument("--dynamic-batch", metavar="MIN:OPT:MAX", help="dynamic batch dimension with this range")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17, at least 13)")
    p.add_argument(
        "--pack",
        type=Path,
        metavar="PATH",
        help="also write a deployment bundle (a directory, or a .tar.gz when PATH ends so)",
    )
    _add_model_flags(p)
    _add_verify_flags(p)
    _add_precision_flags(p)
    _add_engine_flags(p)
    _common(p)
    p.set_defaults(handler=_run_export)


def _add_precision_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reduced precision (targets onnx-fp16, onnx-int8, ort-int8)")
    g.add_argument(
        "--calib",
        type=Path,
        metavar="PATH",
        help="calibration images (a folder, searched recursively) or an .npy/.npz of preprocessed "
        "batches; default: the shipped model's calibration split",
    )
    g.add_argument("--calib-size", type=_int_at_least(1), metavar="N", help="a seeded subset of N inputs")
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


def _fill_verify_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", type=Path, metavar="ARTIFACT", help="the ONNX file to check")
    p.add_argument(
        "--reference",
        type=Path,
        required=True,
        metavar="MODEL_OR_ONNX",
        help="the checkpoint or FP32 ONNX to compare with",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the JSON report to FILE")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="the artifact's precision: picks the default tolerances (default fp32)",
    )
    _add_model_flags(p)
    _add_verify_flags(p)
    _common(p)
    p.set_defaults(handler=_run_verify)


def _fill_sensitivity_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, metavar="MODEL", help="a .pt/.pth checkpoint or an FP32 .onnx file")
    p.add_argument(
        "--target",
        default="onnx-int8",
        choices=("onnx-int8", "ort-int8"),
        help="the Q/DQ flavour measured (onnx-int8: TensorRT's, the default; ort-int8: ONNX Runtime CPU's)",
    )
    p.add_argument("--top", type=_int_at_least(1), default=15, metavar="N", help="rows of the table (default 15)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the JSON report to FILE")
    _add_model_flags(p)
    _add_precision_flags(p)
    _common(p)
    p.set_defaults(
        handler=_run_sensitivity,
        eval_dir=None,
        eval_limit=500,
        atol=None,
        rtol=None,
        min_cosine=None,
        min_agreement=None,
        opset=17,
        batch=None,
        dynamic_batch="1:8:8",
    )


def _run_sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    from ghost_deploy.sensitivity import sensitivity_of_model

    return sensitivity_of_model(args.model, _export_config(args), top=args.top, output=args.output)


def _fill_build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="FP32, FP16 or Q/DQ ONNX written by ghost-export")
    p.add_argument("--target", required=True, choices=("trt-fp32", "trt-fp16", "trt-int8"))
    p.add_argument("-o", "--output", type=Path, metavar="PATH", help="the engine (default <onnx stem>.<target>.engine)")
    p.add_argument("--trt-version", metavar="X.Y.Z", help="plan for this TensorRT (default: the installed one)")
    p.add_argument("--dynamic-batch", metavar="MIN:OPT:MAX", help="profile for a dynamic batch dimension")
    _add_engine_flags(p)
    _common(p)
    p.set_defaults(handler=_run_build)


def _engine_options(args: argparse.Namespace) -> Any:
    from ghost_deploy.engine import EngineOptions

    return EngineOptions(
        int8_mode=args.int8_mode,
        workspace_mib=args.workspace,
        timing_cache=args.timing_cache,
        optimization_level=args.builder_optimization_level,
        hardware_compatibility=args.hardware_compatibility,
        version_compatible=args.version_compatible,
        dla_core=args.dla_core,
    )


def _run_build(args: argparse.Namespace) -> dict[str, Any]:
    from ghost_deploy.engine import build_engine
    from ghost_deploy.export import parse_dynamic_batch

    options = _engine_options(args)
    dynamic = parse_dynamic_batch(args.dynamic_batch) if args.dynamic_batch else None
    return build_engine(
        args.model,
        args.target,
        options,
        output=args.output,
        trt_version=args.trt_version,
        dynamic_batch=dynamic,
        command=["ghost-deploy", "build", *args.argv],
    )


# sub-commands whose code lives in their own modules; listed only when the module is present
_PLUGINS = (
    ("profile", "ghost_deploy.profile", "fill_parser", "latency like trtexec: warm-up, duration, percentiles"),
    ("bench", "ghost_deploy.bench", "fill_parser", "every target this machine can run, in one table"),
    ("pack", "ghost_deploy.bundle", "fill_parser", "a deployment bundle: artifacts, manifest, labels, build.sh"),
    ("run", "ghost_deploy.runtime_cli", "fill_run_parser", "run a bundle on images"),
    ("inspect", "ghost_deploy.runtime_cli", "fill_inspect_parser", "print a bundle's manifest"),
)


def _PLUGINS_PRESENT() -> list[tuple[str, Callable[[argparse.ArgumentParser], None], str]]:
    from importlib.util import find_spec

    return [
        (name, _plugin(module, function), text)
        for name, module, function, text in _PLUGINS
        if find_spec(module) is not None
    ]


def _plugin(module: str, function: str = "fill_parser") -> Callable[[argparse.ArgumentParser], None]:
    """A sub-command whose parser lives in its own module: `function(p)` adds its options and `handler`."""

    def fill(p: argparse.ArgumentParser) -> None:
        import importlib

        getattr(importlib.import_module(module), function)(p)

    return fill


def _fill_doctor_parser(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.set_defaults(handler=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> dict[str, Any]:
    from ghost_deploy.doctor import diagnose

    return diagnose()


def build_parser() -> argparse.ArgumentParser:
    """The parser of `ghost-deploy`."""
    p = argparse.ArgumentParser(
        prog="ghost-deploy",
        description="GhostNet to the edge: export, verify.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ghost-deploy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, fill, text in (
        ("export", _fill_export_parser, "checkpoint to a simplified, verified ONNX model (also: ghost-export)"),
        ("verify", _fill_verify_parser, "compare an ONNX artifact with a reference on ONNX Runtime CPU"),
        ("sensitivity", _fill_sensitivity_parser, "rank the INT8 layers by the top-1 agreement they cost"),
        ("build", _fill_build_parser, "build a TensorRT engine on the device from an ONNX made by ghost-export"),
        (
            "doctor",
            _fill_doctor_parser,
            "what this machine has (GPU, TensorRT, CUDA, Jetson) and what each target needs",
        ),
        *_PLUGINS_PRESENT(),
    ):
        sp = sub.add_parser(
            name, help=text, description=text, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        fill(sp)
    return p


def _overrides(args: argparse.Namespace) -> Any:
    from ghost_deploy.modelinfo import Overrides
    from ghost_deploy.preprocess import parse_triple

    labels = None
    if args.labels is not None:
        try:
            labels = tuple(line.strip() for line in args.labels.read_text().splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as exc:
            from ghost_deploy.errors import InputError

            raise InputError(f"cannot read --labels {args.labels}: {exc}") from None
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


def _tolerances(args: argparse.Namespace, precision: str = "fp32") -> Any:
    import dataclasses

    from ghost_deploy.verify import Tolerances

    tol = Tolerances.for_precision(precision)
    changes = {
        "max_abs": args.atol,
        "rtol": args.rtol,
        "min_cosine": args.min_cosine,
        "min_agreement": args.min_agreement,
    }
    return dataclasses.replace(tol, **{k: v for k, v in changes.items() if v is not None})


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _precision(args: argparse.Namespace) -> Any:
    from ghost_deploy.precision import PrecisionConfig

    return PrecisionConfig(
        calib_method=args.calib_method or ("minmax" if args.target == "ort-int8" else "entropy"),
        percentile=args.percentile,
        exclude_nodes=_names(args.exclude_nodes),
        exclude_op_types=_names(args.exclude_op_types),
        high_precision=args.high_precision,
        trt_version=args.trt_version,
        calib_cache=args.calib_cache,
        auto_exclude=args.auto_exclude,
        auto_exclude_agreement=1.0 - (args.max_accuracy_drop if args.max_accuracy_drop is not None else 1.0) / 100,
    )


def _precision_tolerances(args: argparse.Namespace) -> Any:
    import dataclasses

    from ghost_deploy.precision import precision_of
    from ghost_deploy.verify import Tolerances

    precision = precision_of(args.target)
    if precision == "fp32":
        return None
    tol = Tolerances.for_precision(precision)
    if args.max_accuracy_drop is not None:
        tol = dataclasses.replace(tol, max_accuracy_drop=args.max_accuracy_drop / 100.0)
    return tol


def _run_export(args: argparse.Namespace) -> dict[str, Any]:
    from ghost_deploy.pipeline import export_model

    if args.target.startswith("trt-"):
        from ghost_deploy.engine import export_engine

        report = export_engine(args.model, _export_config(args), _engine_options(args))
        if args.pack is not None:
            report["bundle"] = _pack([Path(report["engine"]["path"]), Path(report["onnx"]["path"])], args.pack)
        return report
    result = export_model(args.model, _export_config(args))
    if args.pack is not None:
        result.report["bundle"] = _pack([result.artifact], args.pack)
    return result.report


def _pack(artifacts: list[Path], output: Path) -> Any:
    from ghost_deploy.bundle import pack

    packed = pack(artifacts, output)
    for warning in packed.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return packed.get("bundle")


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorRT engines (targets trt-fp32, trt-fp16, trt-int8)")
    g.add_argument(
        "--int8-mode",
        choices=("explicit", "implicit"),
        default="explicit",
        help="explicit: the Q/DQ graph (default); implicit: a calibrator reading the CPU-made cache "
        "(TensorRT 8.5 to 10 only)",
    )
    g.add_argument("--workspace", type=_int_at_least(1), metavar="MIB", help="builder workspace in MiB")
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


def _export_config(args: argparse.Namespace) -> Any:
    from ghost_deploy.export import BatchSpec, parse_dynamic_batch
    from ghost_deploy.pipeline import ExportConfig

    batch = None
    if args.dynamic_batch:
        batch = BatchSpec(None, parse_dynamic_batch(args.dynamic_batch))
    elif args.batch:
        batch = BatchSpec(args.batch)
    return ExportConfig(
        target=args.target,
        output=args.output,
        overrides=_overrides(args),
        batch=batch,
        opset=args.opset,
        eval_dir=args.eval_dir,
        eval_limit=args.eval_limit,
        tolerances=_tolerances(args),
        trust=args.trust_checkpoint,
        command=["ghost-export", *args.argv],
        calib=args.calib,
        calib_size=args.calib_size,
        precision=_precision(args),
        precision_tolerances=_precision_tolerances(args),
    )


def _run_verify(args: argparse.Namespace) -> dict[str, Any]:
    from ghost_deploy.verify_artifact import verify_artifact

    return verify_artifact(
        args.artifact,
        args.reference,
        overrides=_overrides(args),
        eval_dir=args.eval_dir,
        eval_limit=args.eval_limit,
        tolerances=_tolerances(args, args.precision),
        trust=args.trust_checkpoint,
        output=args.output,
        command=["ghost-deploy", "verify", *args.argv],
    )


def summary(report: dict[str, Any]) -> str:
    """The human summary of a report."""
    if "targets" in report and "gpus" in report:
        from ghost_deploy.doctor import render

        return render(report)
    lines = []
    if "artifact" in report:
        lines.append(f"artifact: {report['artifact']['path']} ({report['artifact']['bytes'] / 1e6:.2f} MB)")
    rep = report.get("reparameterization")
    if rep:
        lines.append(
            f"re-parameterised (GhostNetV3 branches fused before export): {rep['parameters_before'] / 1e6:.2f}M -> "
            f"{rep['parameters_after'] / 1e6:.2f}M parameters; fused vs unfused max abs error "
            f"{rep['max_abs_error_float64']:.1e} in float64, {rep['max_abs_error_float32']:.1e} in float32 (the "
            f"unfused model's own float32 rounding: {rep['unfused_float32_rounding_error']:.1e})"
        )
    graph = report.get("graph")
    if graph:
        lines.append(
            f"graph: {graph['nodes_before']} -> {graph['nodes_after']} nodes "
            f"({graph['identity_slices_removed']} identity Slices removed)"
        )
    ver = report.get("verification")
    if ver:
        m = ver["metrics"]
        acc = ""
        if "candidate_top1" in m:
            acc = f", top-1 {m['candidate_top1']:.2%} (reference {m['reference_top1']:.2%})"
        lines.append(
            f"verification {'PASSED' if ver['passed'] else 'FAILED'} on {m['samples']} inputs "
            f"({ver['data'].get('what', ver['data']['kind'])}): max abs error {m['max_abs_error']:.2e}, "
            f"cosine {m['cosine_min']:.6f}, top-1 agreement {m['top1_agreement']:.2%}{acc}"
        )
        if ver["data"].get("note"):
            lines.append(f"note: {ver['data']['note']}")
    pver = report.get("precision_verification")
    if pver:
        m = pver["metrics"]
        acc = f", top-1 {m['candidate_top1']:.2%} (FP32 {m['reference_top1']:.2%})" if "candidate_top1" in m else ""
        lines.append(
            f"{report['target']} preview {'PASSED' if pver['passed'] else 'FAILED'} against the FP32 ONNX on "
            f"{m['samples']} inputs: top-1 agreement {m['top1_agreement']:.2%}, cosine {m['cosine_mean']:.5f}{acc}"
        )
    auto = report.get("precision", {}).get("calibration", {}).get("auto_exclude")
    if auto:
        lines.append(
            f"auto-exclude: {len(auto['excluded'])} layers kept in higher precision "
            f"({'met' if auto['met'] else 'NOT met'}: agreement >= {auto['min_agreement']:.2%} on calibration data)"
        )
    sens = report.get("sensitivity")
    if sens:
        lines.append(f"INT8 sensitivity ({sens['measured_on']}), most costly first:")
        lines.append(f"  {'agreement':>9}  {'cosine':>8}  layer")
        for row in sens["layers"][: report.get("top", 15)]:
            lines.append(f"  {row['agreement']:>9.2%}  {row['cosine_mean']:>8.5f}  {row['node']} ({row['op_type']})")
    steps = report.get("steps", [])
    if steps:
        lines.append("steps: " + ", ".join(f"{s['name']} {s['seconds']:.2f} s" for s in steps))
    if "artifact" in report:
        lines.append(f"report: {report['artifact']['path']}.json")
    return "\n".join(lines)


def _dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str) -> int:
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    try:
        report = args.handler(args)
    except VerificationFailed as exc:
        result = exc.result
        rep = getattr(result, "report", result)
        if args.json and isinstance(rep, dict):
            print(json.dumps(rep, indent=2))
        elif isinstance(rep, dict):
            print(summary(rep))
        return _fail(prog, exc, args.verbose)
    except GhostDeployError as exc:
        return _fail(prog, exc, args.verbose)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: one line, traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    text = report.pop("human_summary", None)  # a command may render its own summary
    print(json.dumps(report, indent=2) if args.json else text if isinstance(text, str) else summary(report))
    return EXIT_OK


def _fail(prog: str, exc: GhostDeployError, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(exc)
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ghost-deploy`."""
    return _dispatch(build_parser(), argv, "ghost-deploy")


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ghost-export` (the short form of `ghost-deploy export`)."""
    return _dispatch(build_export_parser(), argv, "ghost-export")


if __name__ == "__main__":
    sys.exit(main())
