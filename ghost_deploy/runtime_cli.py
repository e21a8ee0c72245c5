"""`ghost-deploy run BUNDLE IMAGE...` and `ghost-deploy inspect BUNDLE`: thin wrappers of ghost_deploy.runtime."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ghost_deploy.runtime import Bundle


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the JSON report on standard output")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")


def fill_run_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy run`."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle directory or .tar.gz")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
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
    with Bundle.open(args.bundle) as bundle:
        results: list[dict[str, Any]] = []
        for image in args.images:
            preds = bundle.predict(image, top_k=args.top_k)
            results.append({"image": str(image), "top": [{"label": p.label, "score": p.score} for p in preds]})
        artifact = bundle.artifact["file"]
    lines = [f"{r['image']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]) for r in results]
    return {"bundle": str(args.bundle), "artifact": artifact, "results": results, "human_summary": "\n".join(lines)}


def inspect_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Verify a bundle and summarise its manifest."""
    with Bundle.open(args.bundle) as bundle:
        manifest = bundle.manifest
    return {"bundle": str(args.bundle), "manifest": manifest, "human_summary": summarise(manifest)}


def summarise(m: dict[str, Any]) -> str:
    """A readable summary of a manifest."""
    pre, inp, out = m["preprocessing"], m["input"], m["output"]
    lines = [
        f"bundle schema {m['schema_version']}, packed {m['created']} by ghost-deploy {m['tool']['version']}",
        f"model: {m['model'].get('arch')} (width {m['model'].get('width')}), {m['model']['num_classes']} classes",
        f"input: {inp['name']} {inp['shape']} {inp['dtype']} {inp['layout']} RGB, dynamic batch {inp['dynamic_batch']}",
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
