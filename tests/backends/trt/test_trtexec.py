"""The trtexec command and `build.sh` rendered for each TensorRT version and target."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ghost_deploy.backends.trt.plan import TARGETS, BuildPlan, BuildRequest, plan_build
from ghost_deploy.backends.trt.trtexec import render_build_script, trtexec_args
from ghost_deploy.errors import InputError

VERSIONS = ("8.5.2", "8.6.1", "10.3.0", "10.13.0", "11.4.0")
ONNX = {
    "onnx_fp32": Path("m.onnx"),
    "onnx_fp16": Path("m.fp16.onnx"),
    "onnx_qdq_fp32": Path("m.int8.onnx"),
    "onnx_qdq_fp16": Path("m.int8-fp16.onnx"),
}


def plan(version: str, target: str, **kw: Any) -> BuildPlan:
    """The plan for a 3x64x64 input with every ONNX at hand."""
    req = BuildRequest(**{"target": target, "input_name": "input", "input_chw": (3, 64, 64), **ONNX, **kw})
    return plan_build(version, req)


def args(p: BuildPlan) -> list[str]:
    return trtexec_args(p, "m.onnx", "m.plan", "t.cache" if p.timing_cache else None, "c.cache")


# precision flags trtexec gets, per target, on 8.5-10.x (weakly typed) and on 11
PRECISION = {
    "trt-fp32": ([], ["--stronglyTyped"]),
    "trt-fp16": (["--fp16"], ["--stronglyTyped"]),
    "trt-int8": (["--int8", "--fp16"], ["--stronglyTyped"]),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_precision_flags_per_version(version: str, target: str) -> None:
    got = [a for a in args(plan(version, target)) if a in ("--fp16", "--int8", "--stronglyTyped", "--best")]
    weak, strong = PRECISION[target]
    assert got == (strong if version.startswith("11.") else weak)
    assert not any(a.startswith("--calib") for a in args(plan(version, target)))


@pytest.mark.parametrize("version", ["10.3.0", "10.13.0"])
def test_strongly_typed_on_10_drops_precision_flags(version: str) -> None:
    got = args(plan(version, "trt-int8", strongly_typed=True))
    assert "--stronglyTyped" in got
    assert "--int8" not in got
    assert "--fp16" not in got


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_implicit_int8_loads_the_cache(version: str) -> None:
    got = args(plan(version, "trt-int8", int8_mode="implicit", calibration_cache=Path("c.cache")))
    assert got[:2] == ["--onnx=m.onnx", "--saveEngine=m.plan"]
    assert {"--int8", "--fp16", "--calib=c.cache"} <= set(got)


def test_device_calibration_cannot_be_rendered() -> None:
    with pytest.raises(InputError, match="trtexec cannot calibrate"):
        args(plan("10.3.0", "trt-int8", int8_mode="implicit"))


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_batch_shapes(version: str) -> None:
    got = args(plan(version, "trt-fp16", dynamic_batch=(1, 4, 8)))
    assert "--minShapes=input:1x3x64x64" in got
    assert "--optShapes=input:4x3x64x64" in got
    assert "--maxShapes=input:8x3x64x64" in got
    assert not any("Shapes" in a for a in args(plan(version, "trt-fp16")))


@pytest.mark.parametrize(("version", "flag"), [("8.5.2", "workspace:512"), ("8.6.1", "workspace:512"),
                                               ("10.3.0", "workspace:512M"), ("11.4.0", "workspace:512M")])  # fmt: skip
def test_workspace_as_mem_pool_size(version: str, flag: str) -> None:
    got = args(plan(version, "trt-fp32", workspace_mib=512))
    assert f"--memPoolSize={flag}" in got
    assert not any(a.startswith("--workspace") for a in got)


@pytest.mark.parametrize("version", VERSIONS[1:])
def test_builder_options_from_8_6(version: str) -> None:
    got = args(plan(version, "trt-fp16", optimization_level=4, version_compatible=True, timing_cache=Path("t")))
    assert "--builderOptimizationLevel=4" in got
    assert "--versionCompatible" in got
    assert "--timingCacheFile=t.cache" in got
    assert not any(a.startswith("--builderOptimizationLevel") for a in args(plan(version, "trt-fp16")))


def test_hardware_compatibility_spelling() -> None:
    assert "--hardwareCompatibilityLevel=ampere+" in args(plan("8.6.1", "trt-fp16", hardware_compatibility="ampere+"))
    same = args(plan("10.13.0", "trt-fp16", hardware_compatibility="same_compute_capability"))
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in same


def test_dla_flags() -> None:
    got = args(plan("10.3.0", "trt-fp16", dla_core=1))
    assert {"--useDLACore=1", "--allowGPUFallback", "--fp16"} <= set(got)


@pytest.mark.parametrize("version", VERSIONS)
def test_layer_information_is_exported(version: str) -> None:
    got = args(plan(version, "trt-fp32"))
    assert "--exportLayerInfo=m.plan.layers.json" in got
    assert "--profilingVerbosity=detailed" in got


@pytest.mark.parametrize("version", VERSIONS)
def test_script_header_names_the_version(version: str, tmp_path: Path) -> None:
    p = plan(version, "trt-int8", onnx_qdq_fp32=tmp_path / "m.int8.onnx", onnx_qdq_fp16=tmp_path / "m.int8.onnx")
    text = render_build_script(p, p.onnx_path, tmp_path / "m.plan", script_path=tmp_path / "m.plan.build.sh")
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert f"TensorRT {version}" in lines[2]
    assert "set -euo pipefail" in lines
    assert 'cd "$(dirname "$0")"' in lines
    assert "--onnx=m.int8.onnx" in text
    assert str(tmp_path) not in text


FAKE_TRTEXEC = '#!/usr/bin/env bash\nprintf "%s\\0" "$PWD" "$@" > "$ARGS_OUT"\n'


def run_script(script: Path, tmp_path: Path) -> list[str]:
    """Run `script` with a fake trtexec; its working directory and arguments."""
    fake = tmp_path / "fake_trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    out = tmp_path / "args.bin"
    env = {**os.environ, "TRTEXEC": str(fake), "ARGS_OUT": str(out)}
    subprocess.run(["bash", str(script)], check=True, cwd=tmp_path, env=env)
    return out.read_text().split("\0")[:-1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_runs_from_anywhere_with_odd_paths_after_the_bundle_moves(tmp_path: Path) -> None:
    bundle = tmp_path / "my bundle"
    (bundle / "onnx dir").mkdir(parents=True)
    p = plan(
        "10.3.0",
        "trt-int8",
        int8_mode="implicit",
        calibration_cache=bundle / "calib $x'.cache",
        onnx_fp32=bundle / "onnx dir" / "m.onnx",
        timing_cache=bundle / "t.cache",
    )
    script = bundle / "m.plan.build.sh"
    script.write_text(render_build_script(p, p.onnx_path, bundle / "m.plan", script_path=script))
    moved = tmp_path / "elsewhere"
    bundle.rename(moved)
    cwd, *got = run_script(moved / script.name, tmp_path)
    assert Path(cwd) == moved
    assert "--onnx=onnx dir/m.onnx" in got
    assert "--calib=calib $x'.cache" in got
    assert "--timingCacheFile=t.cache" in got
    assert "--saveEngine=m.plan" in got


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_newline_in_a_file_name_runs_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "x.onnx"
    victim.write_text("keep me")
    p = plan("10.3.0", "trt-fp32", onnx_fp32=tmp_path / "a\nrm -f x.onnx")
    script = tmp_path / "b.sh"
    script.write_text(render_build_script(p, p.onnx_path, tmp_path / "m.plan", script_path=script))
    _, *got = run_script(script, tmp_path)
    assert victim.exists()
    assert "--onnx=a\nrm -f x.onnx" in got


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_trtexec_disables_tf32_unless_the_plan_allows_it(version: str, target: str) -> None:
    """trtexec enables TF32 by default; its help, 8.5 to 11.1: "--noTF32  Disable tf32 precision" (tensorrt.md s10)."""
    assert "--noTF32" in args(plan(version, target))
    assert "--noTF32" not in args(plan(version, target, tf32=True))
