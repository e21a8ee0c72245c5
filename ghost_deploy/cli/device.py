"""`ghost-deploy prepare BUNDLE` and `ghost-deploy cache list|prune`: a device's engines, made and kept ahead."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ghost_deploy.cli.bundle import artifact_flags
from ghost_deploy.cli.flags import common as _common
from ghost_deploy.cli.flags import float_between
from ghost_deploy.report import print_line

MAX_DAYS = 36_500.0  # --older-than: a century; NaN (which removed nothing, silently) and inf are refused


def fill_prepare_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy prepare`."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle directory or .tar.gz")
    artifact_flags(p)
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="build (and verify) the engine here even when the packed or a cached one would do",
    )
    _common(p)
    p.set_defaults(handler=run_prepare)


def run_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Settle the bundle's engine on this device (packed and verified, or built, verified and cached) and say how."""
    from ghost_deploy.bundle.device import Machine
    from ghost_deploy.bundle.runtime import Bundle

    machine = Machine.here()  # exit 3 without TensorRT: preparing means TensorRT
    say = None if args.quiet else _stderr
    engine = "rebuild" if args.rebuild else "auto"
    with Bundle.open(
        args.bundle, warn=False, artifact=args.artifact, engine=engine, cache_dir=args.cache_dir, say=say
    ) as b:
        choice = b.select()
        found = b.engine.to_dict() if b.engine else None
    report = {
        "bundle": str(args.bundle),
        "machine": {**machine.__dict__, "described": machine.describe()},
        "artifact": choice.artifact["file"],
        "target": choice.artifact["target"],
        "backend": choice.backend,
        "why": choice.why,
        "engine": found,
    }
    report["human_summary"] = _prepared_text(report)
    return report


def _prepared_text(report: dict[str, Any]) -> str:
    """What prepare did, in a few lines."""
    engine = report["engine"]
    if engine is None:
        return (
            f"{report['artifact']}: runs on ONNX Runtime here ({report['why']}); no TensorRT engine to prepare: pack "
            "it with --tensorrt, or choose an engine with --artifact"
        )
    how = {"packed": "the packed engine", "cached": "a cached engine (built here earlier)", "built": "built here"}
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in engine["seconds"].items())
    lines = [
        f"{report['artifact']}: {how[engine['source']]} for {report['machine']['described']}"
        + (f" ({seconds})" if seconds else ""),
        f"why: {engine['why']}",
    ]
    record = engine["verification"]
    if record is None:
        lines.append("verification: none (the bundle has no reference set): NOT verified on this device")
    else:
        m = record["metrics"]
        lines.append(
            f"verification {'PASSED' if record['passed'] else 'FAILED'} on {m['samples']} reference inputs: "
            f"cosine min {_num(m.get('cosine_min'))}, mean {_num(m.get('cosine_mean'))}, top-1 agreement "
            f"{m['top1_agreement']:.2%}, max abs error {_num(m.get('max_abs_error'), '.3g')}"
        )
    lines.append(f"engine: {engine['path']}")
    if engine["cache_entry"]:
        lines.append(f"cache entry: {engine['cache_entry']}")
    return "\n".join(lines)


def _num(value: float | None, spec: str = ".6f") -> str:
    return "n/a" if value is None else format(value, spec)


def fill_cache_parser(p: argparse.ArgumentParser) -> None:
    """`ghost-deploy cache list` and `cache prune`."""
    sub = p.add_subparsers(dest="cache_command", required=True, metavar="list|prune", help="what to do with the cache")
    listing = sub.add_parser("list", help="every cached engine: size, TensorRT, GPU, last use")
    prune = sub.add_parser("prune", help="remove cached engines by age, by total size, or all")
    prune.add_argument(
        "--older-than",
        type=float_between(0.0, MAX_DAYS),
        metavar="DAYS",
        help=f"remove engines unused for DAYS days (0 to {MAX_DAYS:.0f})",
    )
    prune.add_argument("--max-size", metavar="SIZE", help="then remove the least recently used down to SIZE (500M, 2G)")
    prune.add_argument("--all", action="store_true", help="remove everything, rejected engines kept aside included")
    for q in (listing, prune):
        q.add_argument("--cache-dir", type=Path, metavar="DIR", help="the engine cache (default: see ghost-deploy run)")
        _common(q)
    listing.set_defaults(handler=run_cache_list)
    prune.set_defaults(handler=run_cache_prune)


def run_cache_list(args: argparse.Namespace) -> dict[str, Any]:
    """List the engine cache."""
    from ghost_deploy.backends.trt.cache_admin import list_cache
    from ghost_deploy.backends.trt.engine_cache import EngineCache

    cache = EngineCache(args.cache_dir)
    items = [i.to_dict() for i in list_cache(cache)]
    total = sum(i["bytes"] for i in items)
    lines = [f"engine cache {cache.root}: {len(items)} item(s), {total / 1e6:.2f} MB"]
    for i in items:
        where = f"TensorRT {i['trt_version']} on {i['gpu']} (CC {i['compute_capability']})" if i["trt_version"] else ""
        lines.append(
            f"  {i['kind']:<10} {i['bytes'] / 1e6:8.2f} MB  last used {i['last_used']}  {i['source'] or ''} {where}"
            f"  {Path(i['path']).name}"
        )
    return {"cache": str(cache.root), "items": items, "bytes": total, "human_summary": "\n".join(lines)}


def run_cache_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Prune the engine cache."""
    from ghost_deploy.backends.trt.cache_admin import parse_size, prune_cache
    from ghost_deploy.backends.trt.engine_cache import EngineCache

    limit = parse_size(args.max_size) if args.max_size is not None else None
    report = prune_cache(EngineCache(args.cache_dir), args.older_than, limit, args.all)
    report["human_summary"] = (
        f"engine cache {report['cache']}: removed {len(report['removed'])} item(s) ({report['freed_bytes'] / 1e6:.2f} "
        f"MB); kept {report['kept_entries']} engine(s), {report['kept_bytes'] / 1e6:.2f} MB"
        + (f"; {len(report['busy'])} in use by another process were left" if report["busy"] else "")
    )
    return report


def _stderr(text: str) -> None:
    print_line(text, sys.stderr)
