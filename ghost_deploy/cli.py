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
from ghost_deploy.cli_flags import (
    add_engine_flags,
    add_model_flags,
    add_precision_flags,
    add_verify_flags,
    int_at_least,
)
from ghost_deploy.cli_summary import summary
from ghost_deploy.errors import EXIT_FAILURE, EXIT_OK, GhostDeployError, VerificationFailed

EXIT_CODES = """exit codes:
  0  success
  1  unexpected failure
  2  bad input or usage
  3  missing optional dependency (the message names the extra to install)
  4  a verification or accuracy gate failed (the report is still written)"""


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
    b.add_argument("--batch", type=int_at_least(1), metavar="N", help="fixed batch size (default 1)")
    b.add_argument("--dynamic-batch", metavar="MIN:OPT:MAX", help="dynamic batch dimension with this range")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17, at least 13)")
    p.add_argument(
        "--pack",
        type=Path,
        metavar="PATH",
        help="also write a deployment bundle (a directory, or a .tar.gz when PATH ends so)",
    )
    add_model_flags(p)
    add_verify_flags(p)
    add_precision_flags(p)
    add_engine_flags(p)
    _common(p)
    p.set_defaults(handler=_run_export)


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
    add_model_flags(p)
    add_verify_flags(p)
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
    p.add_argument("--top", type=int_at_least(1), default=15, metavar="N", help="rows of the table (default 15)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the JSON report to FILE")
    add_model_flags(p)
    add_precision_flags(p)
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
    add_engine_flags(p)
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
