"""`ghost-deploy pack`, `run BUNDLE IMAGE...` and `inspect BUNDLE`: thin wrappers of the bundle package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ghost_deploy.cli.flags import common as _common


def fill_pack_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy pack`."""
    p.add_argument("artifacts", type=Path, nargs="+", metavar="ARTIFACT", help="engines and/or ONNX from ghost-export")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PATH", help="a directory, or PATH.tar.gz")
    p.add_argument("--profile", type=Path, metavar="FILE", help="a profile report whose latency summary to include")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at PATH")
    p.add_argument(
        "--allow-failed",
        action="store_true",
        help="pack an artifact whose report says a gate failed, or whose bytes differ from its report (refused "
        "otherwise); the manifest records it and inspect / Bundle.open warn",
    )
    _common(p)
    p.set_defaults(handler=run_pack)


def run_pack(args: argparse.Namespace) -> dict[str, Any]:
    """Pack artifacts into a bundle."""
    from ghost_deploy.bundle.pack import pack

    report = pack(list(args.artifacts), args.output, args.profile, args.force, args.allow_failed)
    lines = [f"bundle: {report['bundle']} ({report['files']} files)"]
    lines += [f"warning: {w}" for w in report["warnings"]]
    report["human_summary"] = "\n".join(lines)
    return report


def check_pack_destination(output: Path) -> None:
    """`ghost-export --pack PATH`: refuse an unwritable or existing bundle path before the export starts."""
    from ghost_deploy.bundle.pack import check_destination

    check_destination(output)


def pack_and_warn(artifacts: list[Path], output: Path) -> str | None:
    """`ghost-export --pack`: pack what the export wrote, printing pack's warnings on standard error."""
    from ghost_deploy.bundle.pack import pack

    packed = pack(artifacts, output)
    for warning in packed.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    bundle = packed.get("bundle")
    return str(bundle) if bundle is not None else None


def fill_run_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy run`."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle directory or .tar.gz")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, BMP) to classify")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per image (default 5)")
    _common(p)
    p.set_defaults(handler=run_bundle)


def fill_inspect_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy inspect`."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle directory or .tar.gz")
    _common(p)
    p.set_defaults(handler=inspect_bundle)


def run_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Open, verify and run a bundle on images; the report lists the top-k labels per image."""
    from ghost_deploy.bundle.runtime import Bundle

    with Bundle.open(args.bundle, warn=False) as bundle:
        _warn(bundle.warnings)
        results: list[dict[str, Any]] = []
        for image in args.images:
            preds = bundle.predict(image, top_k=args.top_k)
            results.append({"image": str(image), "top": [{"label": p.label, "score": p.score} for p in preds]})
        artifact = bundle.artifact["file"]
    lines = [f"{r['image']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]) for r in results]
    return {"bundle": str(args.bundle), "artifact": artifact, "results": results, "human_summary": "\n".join(lines)}


def inspect_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Verify a bundle and summarise its manifest."""
    from ghost_deploy.bundle.runtime import Bundle

    with Bundle.open(args.bundle, warn=False) as bundle:
        manifest, warnings = bundle.manifest, bundle.warnings
    summary = "\n".join([summarise(manifest), *(f"warning: {w}" for w in warnings)])
    return {"bundle": str(args.bundle), "manifest": manifest, "warnings": warnings, "human_summary": summary}


def _warn(warnings: list[str]) -> None:
    for text in warnings:
        print(f"warning: {text}", file=sys.stderr)


def summarise(m: dict[str, Any]) -> str:
    """A readable summary of a manifest."""
    pre, inp, out = m["preprocessing"], m["input"], m["output"]
    lines = [
        f"bundle schema {m['schema_version']}, packed {m['created']} by ghost-deploy {m['tool']['version']}",
        f"model: {m['model'].get('arch')} (width {m['model'].get('width')}), {m['model']['num_classes']} classes",
        f"input: {inp['name']} {inp['shape']} {inp['dtype']} {inp['layout']} RGB, {_batch(inp)}",
        f"output: {out['name']} {out['shape']} {out['dtype']} ({out['kind']})",
        f"preprocessing: resize {pre['resize']}, crop {pre['crop']} ({pre['interpolation']}), "
        f"y = (p/255 - {pre['mean']}) / {pre['std']}",
    ]
    for a in m["artifacts"]:
        line = f"artifact: {a['file']} ({a['kind']}, {a['target']}, {a['precision']})"
        if a.get("tensorrt"):
            t = a["tensorrt"]
            line += f", TensorRT {t['version']}, {t.get('gpu')} (CC {t['compute_capability']})"
        metrics = (a.get("precision_verification") or a.get("verification") or {}).get("metrics") or {}
        if "top1_agreement" in metrics:
            line += f", top-1 agreement {metrics['top1_agreement']:.2%}"
        lines.append(line)
    lines.append(f"files: {len(m['files'])} + manifest.json, sizes and sha256 verified")
    return "\n".join(lines)


def _batch(inp: dict[str, Any]) -> str:
    """'fixed batch N' or 'dynamic batch MIN..MAX (OPT)'."""
    dyn = inp.get("dynamic_batch")
    if isinstance(dyn, dict):
        return f"dynamic batch {dyn.get('min')}..{dyn.get('max')} (OPT {dyn.get('opt')})"
    return f"fixed batch {inp['shape'][0]}"
