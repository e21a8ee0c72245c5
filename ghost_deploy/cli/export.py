"""`ghost-deploy export` (= `ghost-export`), `verify`, `sensitivity` and `build`: each turns its arguments into
one call of a stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ghost_deploy.cli import flags
from ghost_deploy.config import MAX_BATCH, ExportConfig, PrecisionConfig
from ghost_deploy.targets import ENGINE_TARGETS, INT8_TARGETS, NAMES
from ghost_deploy.targets import target as target_of


def fill_export_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-export` / `ghost-deploy export`."""
    p.add_argument("model", type=Path, metavar="MODEL", help="a .pt/.pth checkpoint or an .onnx file")
    p.add_argument("--target", default="onnx", choices=NAMES, help="what to build (default onnx)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="PATH",
        help="the artifact (default <model stem>.<target>.onnx beside MODEL); the report is PATH.json",
    )
    b = p.add_mutually_exclusive_group()
    b.add_argument(
        "--batch",
        type=flags.int_at_least(1, MAX_BATCH),
        metavar="N",
        help=f"fixed batch size (default 1, at most {MAX_BATCH})",
    )
    b.add_argument("--dynamic-batch", metavar="MIN:OPT:MAX", help="dynamic batch dimension with this range")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17, at least 13)")
    p.add_argument(
        "--pack",
        type=Path,
        metavar="PATH",
        help="also write a deployment bundle (a directory, or a .tar.gz when PATH ends so)",
    )
    flags.add_model_flags(p)
    flags.add_verify_flags(p)
    flags.add_precision_flags(p)
    flags.add_latency_flags(p)
    flags.add_engine_flags(p)
    flags.common(p)
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> dict[str, Any]:
    """The export job for any target; `--pack` then bundles what it wrote."""
    cfg = flags.export_config(args, args.command_line)
    if args.pack is not None:  # a read-only or taken bundle path is refused before the export, not after
        from ghost_deploy.cli.bundle import check_pack_destination

        check_pack_destination(args.pack)
    if target_of(cfg.target).is_engine:
        from ghost_deploy.stages.export_engine import export_engine

        result = export_engine(args.model, cfg, flags.steps(args))
        packed = [result.artifact, Path(result.report["onnx"]["path"])]
    else:
        from ghost_deploy.stages.export_onnx import export_model

        result = export_model(args.model, cfg, flags.steps(args))
        packed = [result.artifact]
    if args.pack is not None:
        from ghost_deploy.cli.bundle import pack_and_warn

        result.report["bundle"] = pack_and_warn(packed, args.pack, result.fp32)
    result.report["report_file"] = str(result.report_file)
    return result.report


def fill_verify_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy verify`."""
    p.add_argument("artifact", type=Path, metavar="ARTIFACT", help="the ONNX file or TensorRT engine to check")
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
        default=None,
        help="the artifact's precision: picks the default tolerances (default: what the artifact's report says, "
        "else fp32)",
    )
    flags.add_model_flags(p)
    flags.add_verify_flags(p)
    flags.common(p)
    p.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> dict[str, Any]:
    """Compare an artifact with its reference."""
    from ghost_deploy.stages.verify_artifact import artifact_precision, default_gate, verify_artifact

    precision = args.precision or artifact_precision(args.artifact)
    gate = default_gate(args.artifact, precision)  # e.g. widened for an engine built with --tf32; flags win
    report = verify_artifact(
        args.artifact,
        args.reference,
        overrides=flags.overrides(args),
        eval_dir=args.eval_dir,
        eval_limit=args.eval_limit,
        tolerances=flags.tolerances(args, precision, gate),
        trust=args.trust_checkpoint,
        allow_nonfinite_weights=args.allow_nonfinite_weights,
        output=args.output,
        command=args.command_line,
        steps=flags.steps(args),
    )
    return report


def fill_sensitivity_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy sensitivity`."""
    p.add_argument("model", type=Path, metavar="MODEL", help="a .pt/.pth checkpoint or an FP32 .onnx file")
    p.add_argument(
        "--target",
        default="onnx-int8",
        choices=INT8_TARGETS,
        help="the Q/DQ flavour measured (onnx-int8: TensorRT's, the default; ort-int8: ONNX Runtime CPU's)",
    )
    p.add_argument("--top", type=flags.int_at_least(1), default=15, metavar="N", help="rows of the table (default 15)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the JSON report to FILE")
    flags.add_model_flags(p)
    flags.add_precision_flags(p, export=False)
    flags.common(p)
    p.set_defaults(
        handler=run_sensitivity,
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


def run_sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    """Rank the INT8 layers."""
    from ghost_deploy.stages.sensitivity import sensitivity_of_model

    cfg = flags.export_config(args, args.command_line)
    return sensitivity_of_model(args.model, cfg, top=args.top, output=args.output, steps=flags.steps(args))


def fill_build_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy build`."""
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="FP32, FP16 or Q/DQ ONNX written by ghost-export")
    p.add_argument("--target", required=True, choices=ENGINE_TARGETS, help="the engine's precision")
    p.add_argument("-o", "--output", type=Path, metavar="PATH", help="the engine (default <onnx stem>.<target>.engine)")
    p.add_argument(
        "--trt-version",
        type=flags.trt_version,
        metavar="X.Y.Z",
        help="plan for this TensorRT (default: the installed one)",
    )
    p.add_argument("--dynamic-batch", metavar="MIN:OPT:MAX", help="profile for a dynamic batch dimension")
    flags.add_engine_flags(p)
    flags.common(p)
    p.set_defaults(handler=run_build)


def run_build(args: argparse.Namespace) -> dict[str, Any]:
    """Build an engine from an ONNX made by ghost-export."""
    from ghost_deploy.stages.export_engine import build_engine

    cfg = ExportConfig(
        target=args.target,
        output=args.output,
        batch=flags.batch_spec(args),
        precision=PrecisionConfig(trt_version=args.trt_version),
        engine=flags.engine_options(args),
        command=tuple(args.command_line),
    )
    return build_engine(args.model, cfg, flags.steps(args)).report
