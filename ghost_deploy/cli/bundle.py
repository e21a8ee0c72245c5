"""`ghost-deploy pack`, `run BUNDLE IMAGE...` and `inspect BUNDLE`: thin wrappers of the bundle package.

What `run` and `inspect` print comes from files a stranger may have written (manifest, labels): every line
passes `printable`, so an escape sequence or a newline in them is shown, never obeyed by the terminal. `--json`
is escaped by JSON itself.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ghost_deploy.cli.flags import common as _common
from ghost_deploy.cli.flags import int_at_least

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 (newline, tab, ESC included), DEL and C1 (CSI: 0x9b)


def printable(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\n`): one line, inert on a terminal."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


@contextlib.contextmanager
def _printable_errors() -> Iterator[None]:
    """The project's errors raised inside leave with a `printable` message: they may quote a bundle's files."""
    from ghost_deploy.errors import GhostDeployError

    try:
        yield
    except GhostDeployError as exc:
        exc.args = (printable(str(exc)),)
        raise


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
    p.add_argument(
        "--default",
        metavar="NAME|TARGET",
        help="the artifact `run` and Bundle.open use when not told otherwise (a file name or a target)",
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="onnx, onnx-fp16 and onnx-int8 artifacts also run as TensorRT engines built and verified on the device "
        "(ONNX Runtime without TensorRT)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        metavar="FP32.onnx",
        help="the model's FP32 ONNX, whose outputs devices check their engines against (found automatically when "
        "packed or beside an engine's build graph)",
    )
    _common(p)
    p.set_defaults(handler=run_pack)


def run_pack(args: argparse.Namespace) -> dict[str, Any]:
    """Pack artifacts into a bundle."""
    from ghost_deploy.bundle.pack import pack

    report = pack(
        list(args.artifacts),
        args.output,
        args.profile,
        args.force,
        args.allow_failed,
        default=args.default,
        tensorrt=args.tensorrt,
        reference=args.reference,
    )
    size = sum(f["bytes"] for f in report["manifest"]["files"])
    lines = [f"bundle: {report['bundle']} ({report['files']} files, {size / 1e6:.2f} MB before compression)"]
    lines += [f"warning: {w}" for w in report["warnings"]]
    report["human_summary"] = "\n".join(lines)
    return report


def check_pack_destination(output: Path) -> None:
    """`ghost-export --pack PATH`: refuse an unwritable or existing bundle path before the export starts."""
    from ghost_deploy.bundle.pack import check_destination

    check_destination(output)


def pack_and_warn(artifacts: list[Path], output: Path, fp32: Any = None) -> str | None:
    """`ghost-export --pack`: pack what the export wrote, printing pack's warnings on standard error. `fp32`: the
    export's FP32 ONNX (an onnx.ModelProto) when no file of it was written, packed as the bundle's reference."""
    import tempfile

    from ghost_deploy.bundle.pack import pack

    with tempfile.TemporaryDirectory(prefix="ghost-deploy-fp32-") as temp:
        reference = None
        if fp32 is not None:
            reference = Path(temp) / f"{artifacts[0].name}.fp32.onnx"
            reference.write_bytes(fp32.SerializeToString())
        packed = pack(artifacts, output, reference=reference)
    from ghost_deploy.report import print_line

    for warning in packed.get("warnings", []):
        print_line(f"warning: {warning}", sys.stderr)
    bundle = packed.get("bundle")
    return str(bundle) if bundle is not None else None


def fill_run_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy run`."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle directory or .tar.gz")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, BMP) to classify")
    p.add_argument(
        "--top-k",
        type=int_at_least(1),
        metavar="K",
        help="labels per image, 1 to the model's classes (default 5, or all of fewer)",
    )
    artifact_flags(p)
    p.add_argument(
        "--engine",
        choices=("auto", "rebuild", "never"),
        default="auto",
        help="auto (default): the packed engine when it fits this TensorRT and GPU, else one built here (once, "
        "cached, verified); rebuild: build here anyway; never: refuse to build (run ghost-deploy prepare first)",
    )
    _common(p)
    p.set_defaults(handler=run_bundle)


def artifact_flags(p: argparse.ArgumentParser) -> None:
    """--artifact and --cache-dir, for run, inspect and prepare."""
    p.add_argument(
        "--artifact",
        metavar="NAME|TARGET",
        help="the artifact to run: a file name or a target of the bundle (default: the bundle's default, else an "
        "engine where TensorRT is installed, else the first ONNX; see inspect)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the engine cache (default: $GHOST_DEPLOY_ENGINE_CACHE, else $XDG_CACHE_HOME/ghost-deploy/engines)",
    )


def fill_inspect_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy inspect`."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle directory or .tar.gz")
    artifact_flags(p)
    _common(p)
    p.set_defaults(handler=inspect_bundle)


def run_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Open, verify and run a bundle on images; the report lists the top-k labels per image."""
    from ghost_deploy.bundle.runtime import Bundle

    say = None if args.quiet else _stderr
    with (
        _printable_errors(),
        Bundle.open(
            args.bundle, warn=False, artifact=args.artifact, engine=args.engine, cache_dir=args.cache_dir, say=say
        ) as bundle,
    ):
        _warn(bundle.warnings)
        choice = bundle.select()
        if say is not None:
            for line in choice.not_here:
                say(f"note: {line}")
            say(f"runs: {choice.why}" + (f"; engine: {bundle.engine.why}" if bundle.engine else ""))
        results: list[dict[str, Any]] = []
        for image in args.images:
            preds = bundle.predict(image, top_k=args.top_k)
            results.append({"image": str(image), "top": [{"label": p.label, "score": p.score} for p in preds]})
        artifact = choice.artifact["file"]
        engine = bundle.engine.to_dict() if bundle.engine else None
    lines = [f"{r['image']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]) for r in results]
    lines = [printable(line) for line in lines]
    return {
        "bundle": str(args.bundle),
        "artifact": artifact,
        "backend": choice.backend,
        "engine": engine,
        "results": results,
        "human_summary": "\n".join(lines),
    }


def inspect_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Verify a bundle, summarise its manifest, and say what would run here and why (building nothing)."""
    from ghost_deploy.bundle.runtime import Bundle
    from ghost_deploy.bundle.select import describe_here

    with _printable_errors(), Bundle.open(args.bundle, warn=False, settle=False) as bundle:
        manifest, warnings = bundle.manifest, bundle.warnings
        here = describe_here(bundle.root, manifest, args.artifact, args.cache_dir)
    lines = [*_here_lines(here), *(f"warning: {w}" for w in warnings)]
    summary = "\n".join([summarise(manifest), *map(printable, lines)])
    return {
        "bundle": str(args.bundle),
        "manifest": manifest,
        "here": here,
        "warnings": warnings,
        "human_summary": summary,
    }


def _here_lines(here: dict[str, Any]) -> list[str]:
    """What inspect says about this machine: what runs, its engine, what is passed over, and the rule."""
    if here["artifact"] is None:
        lines = [f"runs here: nothing: {here['why']}"]
    else:
        lines = [f"runs here: {here['why']} (on {'TensorRT' if here['backend'] == 'tensorrt' else 'ONNX Runtime'})"]
    engine = here.get("engine")
    if engine:
        word = {"packed": "the packed engine", "verify-packed": "the packed engine", "cached": "a cached engine"}
        lines.append(f"engine here: {word.get(engine['action'], engine['action'])}: {engine['why']}")
    lines += [f"not used here: {line}" for line in here["not_here"]]
    lines.append(f"default rule: {here['default_rule']}")
    return lines


def _stderr(text: str) -> None:
    from ghost_deploy.report import print_line

    print_line(printable(text), sys.stderr)


def _warn(warnings: list[str]) -> None:
    for text in warnings:
        _stderr(f"warning: {text}")


def summarise(m: dict[str, Any]) -> str:
    """A readable summary of a manifest, each line `printable`."""
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
        if a["file"] == m.get("default_artifact"):
            line += ", the bundle's default"
        lines.append(line)
        lines += _quantized(a)
        build = a.get("device_build")
        if build:
            from ghost_deploy.bundle.pack_device import FOR

            graphs = ", ".join(f"{g['file']} for {FOR[t]}" for t, g in build["onnx"].items())
            missing = "; ".join(f"not for {FOR[t]}: {why}" for t, why in (build.get("unavailable") or {}).items())
            lines.append(
                f"  builds {build['target']} on a device from {graphs or 'nothing'}"
                + (f"; {missing}" if missing else "")
            )
    if m.get("reference"):
        ref = m["reference"]
        lines.append(
            f"reference set: {ref['samples']} inputs and the FP32 ONNX's outputs, to verify engines on devices"
        )
    size = sum(f["bytes"] for f in m["files"])
    lines.append(f"files: {len(m['files'])} + manifest.json ({size / 1e6:.2f} MB), sizes and sha256 verified")
    return "\n".join(map(printable, lines))


def _quantized(artifact: dict[str, Any]) -> list[str]:
    """How much of an INT8 artifact is quantized, with the warning when it computes mostly in float."""
    share = artifact.get("quantized")
    if not isinstance(share, dict):
        return []
    from ghost_deploy.precision.share import describe_share, mostly_float_warning

    lines = [f"  quantized: {describe_share(share)}"]
    if share.get("mostly_float"):
        lines.append(f"  warning: {artifact['file']}: {mostly_float_warning(share)}")
    return lines


def _batch(inp: dict[str, Any]) -> str:
    """'fixed batch N' or 'dynamic batch MIN..MAX (OPT)'."""
    dyn = inp.get("dynamic_batch")
    if isinstance(dyn, dict):
        return f"dynamic batch {dyn.get('min')}..{dyn.get('max')} (OPT {dyn.get('opt')})"
    return f"fixed batch {inp['shape'][0]}"
