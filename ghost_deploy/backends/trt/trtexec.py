"""The trtexec command equivalent to a `BuildPlan`, rendered as a bash script (`<artifact>.build.sh`).

A device with trtexec but no TensorRT Python bindings builds the same engine by running the script. Flags
differ by version (docs/reference/anchors.md section 2, docs/reference/tensorrt.md section 1): trtexec 11 is strongly
typed, drops --fp16/--int8/--calib, and keeps --stronglyTyped as a no-op. Paths are written relative to the
script's folder, which the script enters first, so a bundle can be moved.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ghost_deploy.backends.trt.plan import V8_6, V10_0, V11_0, BuildPlan
from ghost_deploy.errors import InputError

TRTEXEC_HARDWARE_LEVELS = {"AMPERE_PLUS": "ampere+", "SAME_COMPUTE_CAPABILITY": "sameComputeCapability"}


def trtexec_args(
    plan: BuildPlan,
    onnx_path: str,
    engine_path: str,
    timing_cache: str | None = None,
    calibration_cache: str | None = None,
) -> list[str]:
    """trtexec's arguments for `plan`, with the paths given as they should appear (unquoted)."""
    if plan.calibrator == "device":
        raise InputError(
            "trtexec cannot calibrate (it only reads a cache with --calib); make the calibration cache on the "
            "CPU with `ghost-export MODEL --target onnx-int8` and pass it, or use --int8-mode explicit"
        )
    args = [f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    args += _precision_args(plan, calibration_cache)
    args += _shape_args(plan)
    args += _builder_args(plan, timing_cache)
    args += [f"--exportLayerInfo={engine_path}.layers.json", "--profilingVerbosity=detailed"]
    return args


def render_build_script(
    plan: BuildPlan,
    onnx_path: Path,
    engine_path: Path,
    *,
    script_path: Path,
) -> str:
    """A bash script that builds `engine_path` from `onnx_path` with trtexec, as `plan` does in Python.

    Every path is made relative to `script_path`'s folder; `TRTEXEC` in the environment overrides the
    trtexec binary (on JetPack it lives in /usr/src/tensorrt/bin).
    """
    base = script_path.parent

    def rel(path: Path | None) -> str | None:
        return None if path is None else _relative(path, base)

    onnx_rel, engine_rel = _relative(onnx_path, base), _relative(engine_path, base)
    args = trtexec_args(plan, onnx_rel, engine_rel, rel(plan.timing_cache), rel(plan.calibration_cache))
    lines = [
        "#!/usr/bin/env bash",
        # repr keeps a newline in a file name from ending the comment
        f"# Builds {engine_rel!r} from {onnx_rel!r} with trtexec, as ghost-export plans it in Python.",
        f"# Rendered for TensorRT {plan.version_text}, target {plan.target}, "
        f"{'strongly' if plan.strongly_typed else 'weakly'} typed, ONNX kind {plan.onnx_kind}.",
        "# trtexec flags differ between versions: run it with the TensorRT it was rendered for.",
        *(f"# Note: {note}" for note in plan.notes),
        *_dla_comment(plan),
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-trtexec}"',
        '"$TRTEXEC" \\',
    ]
    lines += [f"    {shlex.quote(arg)} \\" for arg in args[:-1]]
    lines.append(f"    {shlex.quote(args[-1])}")
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    """`path` relative to `base`, both taken from the current directory when relative."""
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _precision_args(plan: BuildPlan, calibration_cache: str | None) -> list[str]:
    """--stronglyTyped (a no-op kept on 11), or the weak-typing flags --fp16/--int8/--calib (10.x and older)."""
    if plan.strongly_typed:
        return ["--stronglyTyped"]
    args: list[str] = []
    if "INT8" in plan.builder_flags:
        args.append("--int8")
    if "FP16" in plan.builder_flags:
        args.append("--fp16")
    if plan.calibrator == "cache" and calibration_cache is not None:
        args.append(f"--calib={calibration_cache}")
    return args


def _shape_args(plan: BuildPlan) -> list[str]:
    """--minShapes/--optShapes/--maxShapes for a dynamic batch; nothing for a fixed one (the ONNX is static)."""
    if plan.profile is None:
        return []
    p = plan.profile
    return [
        f"--{which}Shapes={p.input_name}:{'x'.join(map(str, shape))}"
        for which, shape in (("min", p.min), ("opt", p.opt), ("max", p.max))
    ]


def _builder_args(plan: BuildPlan, timing_cache: str | None) -> list[str]:
    """Workspace, timing cache, optimization level, compatibility and DLA options."""
    args: list[str] = []
    if plan.workspace_bytes is not None:
        mib = plan.workspace_bytes // 2**20
        # 8.x help: poolfmt ::= pool:sizeInMiB (no suffix documented); 10.x: base-2 suffixes, MiB by default
        args.append(f"--memPoolSize=workspace:{mib}" if plan.trt_version < V10_0 else f"--memPoolSize=workspace:{mib}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if plan.optimization_level is not None and plan.trt_version >= V8_6:
        args.append(f"--builderOptimizationLevel={plan.optimization_level}")
    if plan.hardware_compatibility is not None:
        args.append(f"--hardwareCompatibilityLevel={TRTEXEC_HARDWARE_LEVELS[plan.hardware_compatibility]}")
    if plan.version_compatible:
        args.append("--versionCompatible")
    if plan.dla_core is not None:
        args += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if not plan.tf32:  # trtexec enables TF32 by default (8.5-11.1 help: "--noTF32 Disable tf32 precision")
        args.append("--noTF32")
    return args


def _dla_comment(plan: BuildPlan) -> list[str]:
    """On 11 the Python build sets the parser flag ADJUST_FOR_DLA; no trtexec option for it is documented."""
    if plan.dla_core is None or plan.trt_version < V11_0:
        return []
    return ["# DLA on TensorRT 11: the Python build also sets the ONNX parser flag ADJUST_FOR_DLA."]
