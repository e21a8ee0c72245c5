"""trt-fp32 with and without `--tf32` on a simulated Orin and an Ampere desktop GPU, TensorRT 8.6, 10.3, 10.13, 11.1.

TensorRT sets BuilderFlag.TF32 in every new config (tensorrt.md s10); the simulator then rounds the inner
products' inputs to TF32 on GPUs of compute capability 8.0 or more. ghost-deploy clears the flag unless asked,
and with `--tf32` judges the engine by the FP32 gate widened for TF32 (ghost_deploy/precision/tf32.py). One
source (the tiny trained fixture, opened once) feeds every build. Every figure here is SIMULATED.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ghost_deploy
from ghost_deploy.config import EngineOptions, Tolerances
from ghost_deploy.errors import VerificationFailed
from ghost_deploy.precision.tf32 import widen_for_tf32
from ghost_deploy.report import Steps
from ghost_deploy.stages.export_engine import engine_from_source
from ghost_deploy.stages.source import Source, open_source
from ghost_deploy.stages.verify_artifact import verify_artifact
from ghost_deploy.testing import trtsim
from tests.helpers import TINY_MODEL, small_export_config

VERSIONS = ("8.6", "10.3", "10.13", "11.1")
AMPERE = trtsim.SimulatedGPU("RTX 3060 (trtsim)", "8.6", 12288)
GPUS = {"orin": trtsim.ORIN, "ampere": AMPERE}
QUIET = Steps(echo=lambda text: None)
FP32_GATE = Tolerances.for_precision("fp32")


@pytest.fixture(scope="module")
def source() -> Source:
    """The tiny fixture loaded, exported and verified once (CPU work no TensorRT version changes)."""
    return open_source(TINY_MODEL, small_export_config("trt-fp32", Path("unused.engine")), QUIET)


@pytest.fixture(params=[(v, g) for v in VERSIONS for g in GPUS], ids=lambda p: f"{p[0]}-{p[1]}")
def simulated(request: pytest.FixtureRequest) -> Iterator[trtsim.Simulation]:
    """One simulated TensorRT version on one simulated GPU of compute capability 8.0 or more."""
    version, gpu = request.param
    trtsim.uninstall()
    with trtsim.simulate(version, GPUS[gpu]) as sim:
        yield sim


def _engine(source: Source, path: Path, tf32: bool) -> dict[str, object]:
    cfg = small_export_config("trt-fp32", path, engine=EngineOptions(tf32=tf32))
    return engine_from_source(source, cfg, QUIET).report


@pytest.mark.slow
@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_trt_fp32_passes_its_gate_with_and_without_tf32(
    simulated: trtsim.Simulation, source: Source, tmp_path: Path, tf32: bool
) -> None:
    report = _engine(source, tmp_path / "e.engine", tf32)
    verification, engine = report["verification"], report["engine"]
    assert isinstance(verification, dict) and isinstance(engine, dict)
    assert verification["passed"] and engine["tf32"] is tf32 and report["build_plan"]["tf32"] is tf32  # type: ignore[index]
    header = trtsim.plan_header((tmp_path / "e.engine").read_bytes())
    assert header is not None and header["tf32"] is tf32 and ("TF32" in header["builder_flags"]) is tf32
    metrics = verification["metrics"]
    fp32_limit = FP32_GATE.max_abs + FP32_GATE.rtol * metrics["reference_max_abs"]  # type: ignore[operator]
    if not tf32:  # cleared: the engine computes exactly what ONNX Runtime computes
        assert metrics["max_abs_error"] == 0.0
        assert verification["tolerances"] == FP32_GATE.to_dict()
    else:  # TF32 really rounds (beyond the FP32 gate), and the widened gate holds it
        assert metrics["max_abs_error"] > 10 * fp32_limit
        assert verification["tolerances"] == widen_for_tf32(FP32_GATE).to_dict()
    script = (tmp_path / "e.engine.build.sh").read_text()
    assert ("--noTF32" in script) is not tf32


@pytest.mark.slow
def test_a_tf32_engine_fails_the_unwidened_fp32_gate_and_passes_verify_by_its_report(
    source: Source, tmp_path: Path
) -> None:
    """What the product did before: TF32 on (TensorRT's default) and judged by the FP32 gate: exit 4."""
    with trtsim.simulate("10.3", trtsim.ORIN):
        _engine(source, tmp_path / "t.engine", True)
        onnx = tmp_path / "t.build.onnx"
        with pytest.raises(VerificationFailed, match=r"max abs error .*x the limit"):
            verify_artifact(tmp_path / "t.engine", onnx, tolerances=FP32_GATE, eval_limit=16, steps=QUIET)
        checked = verify_artifact(tmp_path / "t.engine", onnx, eval_limit=16, steps=QUIET)  # the report's tf32
        from ghost_deploy.cli.main import main

        # the command too (before: it always passed the unwidened FP32 tolerances, exit 4)
        command = ["verify", str(tmp_path / "t.engine"), "--reference", str(onnx), "--eval-limit", "16", "-q"]
        assert main(command) == 0
        assert main([*command, "--atol", "1e-6", "--rtol", "0"]) == 4  # a flag given still wins
    assert checked["verification"]["passed"]
    assert checked["verification"]["tolerances"] == widen_for_tf32(FP32_GATE).to_dict()


def test_tf32_on_a_gpu_without_it_changes_nothing_and_says_so(source: Source, tmp_path: Path) -> None:
    steps: list[str] = []
    with trtsim.simulate("8.6", trtsim.XAVIER):
        cfg = small_export_config("trt-fp32", tmp_path / "x.engine", engine=EngineOptions(tf32=True))
        report = engine_from_source(source, cfg, Steps(echo=steps.append)).report
    assert report["verification"]["metrics"]["max_abs_error"] == 0.0
    assert any("--tf32: this GPU has no TF32" in line for line in steps)


@pytest.mark.parametrize("tf32", [False, True])
def test_the_bundle_manifest_records_tf32(source: Source, tmp_path: Path, tf32: bool) -> None:
    with trtsim.simulate("10.13", AMPERE):
        _engine(source, tmp_path / "b.engine", tf32)
        packed = ghost_deploy.pack([tmp_path / "b.engine"], tmp_path / "b.tar.gz")
    assert packed["manifest"]["artifacts"][0]["tensorrt"]["tf32"] is tf32


@pytest.mark.slow
def test_the_cli_flags_reach_the_build_and_a_foreign_timing_cache_is_said_in_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ghost-export --target trt-fp32 --tf32 --timing-cache FILE`, then the same on another TensorRT."""
    import json

    from ghost_deploy.cli.main import export_main

    cache = tmp_path / "t.cache"
    argv = [str(TINY_MODEL), "--target", "trt-fp32", "--eval-limit", "16", "--tf32", "--timing-cache", str(cache)]
    with trtsim.simulate("10.3", trtsim.ORIN):
        assert export_main([*argv, "-o", str(tmp_path / "a.engine")]) == 0
    report = json.loads((tmp_path / "a.engine.json").read_text())
    assert report["engine"]["tf32"] is True and report["verification"]["passed"]
    assert json.loads((tmp_path / "t.cache.json").read_text())["trt_version"] == "10.3.0"
    capsys.readouterr()
    with trtsim.simulate("10.13", trtsim.ORIN):
        assert export_main([*argv, "-o", str(tmp_path / "b.engine")]) == 0
    said = capsys.readouterr().err
    assert "was made by TensorRT 10.3.0 on Orin (trtsim)" in said and "it is not used" in said
    assert json.loads((tmp_path / "t.cache.json").read_text())["trt_version"] == "10.13.0"
