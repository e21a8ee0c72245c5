"""Every trt-* path end to end under the simulated TensorRT 8.6, 10.3, 10.13 and 11.1 (`ghost_deploy.testing.trtsim`).

The product's own code runs against each version's exact Python API (NVIDIA's binding sources); engines
execute on ONNX Runtime CPU with their precision made real, so the accuracy gates mean something. A tiny
trained GhostNet (width 0.25, 32x32, tests/fixtures) keeps the matrix fast. Every result here is labelled
simulated; none is a GPU's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ghost_deploy
from ghost_deploy.bundle.runtime import Bundle, EngineMismatchError
from ghost_deploy.config import BatchSpec, EngineOptions, ExportConfig, Tolerances
from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.profiling.profile import ProfileConfig, profile_artifact
from ghost_deploy.profiling.stats import LoopConfig
from ghost_deploy.report import Steps
from ghost_deploy.stages.export_engine import build_engine
from ghost_deploy.stages.verify_artifact import verify_artifact
from ghost_deploy.testing import trtsim
from tests.helpers import DIGITS, TINY_MODEL, small_export_config

VERSIONS = ("8.6", "10.3", "10.13", "11.1")
QUIET = Steps(echo=lambda text: None)
IMAGE = next((DIGITS / "test" / "7").glob("*.png"))


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """A GhostNet of width 0.25 trained on the digits at 32x32 (its metadata names the data splits)."""
    return TINY_MODEL


@pytest.fixture(params=VERSIONS)
def simulated(request: pytest.FixtureRequest) -> Iterator[trtsim.Simulation]:
    """The simulated TensorRT of one version, installed for the test and removed after it."""
    trtsim.uninstall()
    with trtsim.simulate(request.param) as sim:
        yield sim


def config(target: str, output: Path, **changes: object) -> ExportConfig:
    """A quick export of the tiny model (see tests.helpers.small_export_config)."""
    return small_export_config(target, output, **changes)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["trt-fp32", "trt-fp16", "trt-int8"])
def test_export_builds_verifies_and_marks_a_simulated_engine(
    simulated: trtsim.Simulation, checkpoint: Path, tmp_path: Path, target: str
) -> None:
    result = ghost_deploy.export(checkpoint, config(target, tmp_path / "m.engine"))
    report = result.report
    assert result.passed and report["verification"]["passed"] and report["verification"]["candidate"] == "tensorrt"
    assert report["simulated"] is True and report["engine"]["built"] and report["engine"]["simulated"]
    header = trtsim.plan_header((tmp_path / "m.engine").read_bytes())
    assert header is not None and header["trt_version"] == simulated.version
    assert report["trt_version"]["version"] == simulated.version
    assert (tmp_path / "m.engine.build.sh").is_file()


@pytest.mark.slow
def test_implicit_int8_where_the_version_has_calibrators(
    simulated: trtsim.Simulation, checkpoint: Path, tmp_path: Path
) -> None:
    cfg = config("trt-int8", tmp_path / "i.engine", engine=EngineOptions(int8_mode="implicit"))
    if simulated.api_version == "11.1":
        with pytest.raises(InputError, match=r"calibrators were removed in 11\.0"):
            ghost_deploy.export(checkpoint, cfg)
        assert list(tmp_path.iterdir()) == []  # refused before any work
        return
    result = ghost_deploy.export(checkpoint, cfg)
    assert result.passed and result.report["build_plan"]["calibrator"] == "cache"


@pytest.fixture(scope="module")
def dynamic_onnx(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model's FP32 and FP16 ONNX with a dynamic batch, as ghost-export writes them (no TensorRT)."""
    out = tmp_path_factory.mktemp("dyn")
    paths = {}
    for target in ("onnx", "onnx-fp16"):
        path = out / f"tiny.{target}.onnx"
        ghost_deploy.export(checkpoint, config(target, path, batch=BatchSpec(None, (1, 4, 8))), QUIET)
        paths[target] = path
    return paths


@pytest.mark.slow
def test_build_with_a_dynamic_batch_then_verify_profile_and_refuse_outside_the_profile(
    simulated: trtsim.Simulation, dynamic_onnx: dict[str, Path], tmp_path: Path
) -> None:
    source = dynamic_onnx["onnx-fp16" if simulated.api_version == "11.1" else "onnx"]  # 11 has no FP16 flag
    engine = tmp_path / "d.engine"
    cfg = ExportConfig(target="trt-fp16", output=engine, batch=BatchSpec(None, (1, 4, 8)), command=("pytest",))
    built = build_engine(source, cfg, QUIET)
    assert built.report["engine"]["built"] and built.report["build_plan"]["profile"]["max"][0] == 8
    checked = verify_artifact(engine, dynamic_onnx["onnx"], eval_limit=32, steps=QUIET)
    assert checked["verification"]["passed"] and checked["simulated"]
    loop = LoopConfig(warmup_ms=5, duration_s=0.05, min_iterations=3)
    profiled = profile_artifact(engine, ProfileConfig(loop=loop, layer_runs=2, batches=(2, 8)))
    assert [r["batch"] for r in profiled["results"]] == [2, 8] and profiled["environment"]["tensorrt_simulated"]
    assert profiled["results"][0]["layers"]["layers"]  # IProfiler's layer times, mapped to the ONNX
    assert profiled["results"][0]["inputs"]["kind"] == "images"  # the ONNX's images, found through its report
    with pytest.raises(InputError, match=r"batch 9 is outside the engine's optimization profile .* batch 1\.\.8"):
        profile_artifact(engine, ProfileConfig(loop=loop, layer_runs=0, batches=(9,)))


@pytest.mark.slow
def test_pack_opens_and_predicts_only_under_the_same_simulation(
    simulated: trtsim.Simulation, checkpoint: Path, tmp_path: Path
) -> None:
    result = ghost_deploy.export(checkpoint, config("trt-fp16", tmp_path / "p.engine"), QUIET)
    bundle = tmp_path / "p.tar.gz"
    packed = ghost_deploy.pack([result.artifact], bundle)
    assert packed["manifest"]["artifacts"][0]["tensorrt"]["simulated"] is True
    with Bundle.open(bundle) as opened:
        assert opened.artifact["kind"] == "engine"
        top = opened.predict(IMAGE, top_k=3)
    assert len(top) == 3 and abs(sum(p.score for p in top) - 1.0) < 1.0
    other = "11.1" if simulated.api_version != "11.1" else "10.3"
    trtsim.uninstall()
    with pytest.raises(EngineMismatchError, match="SIMULATED TensorRT"):
        Bundle.open(bundle)
    with trtsim.simulate(other):
        if simulated.api_version == "11.1":  # its build graph is FP16-typed: no FP32 ONNX, so no rebuild elsewhere
            with pytest.raises(EngineMismatchError, match=simulated.version):
                Bundle.open(bundle)
        else:  # one bundle, another TensorRT: built there from the bundled ONNX and verified (issue 19)
            with Bundle.open(bundle) as rebuilt:
                assert rebuilt.engine is not None and rebuilt.engine.source == "built"
                assert rebuilt.engine.verification is not None and rebuilt.engine.verification["passed"]
    trtsim.install(simulated.version)  # the fixture removes it


@pytest.mark.slow
def test_bench_runs_the_engine_rows_labelled_simulated(
    simulated: trtsim.Simulation, checkpoint: Path, tmp_path: Path
) -> None:
    from ghost_deploy.profiling.bench import BenchConfig, bench_model, render

    cfg = BenchConfig(
        loop=LoopConfig(warmup_ms=5, duration_s=0.03, min_iterations=3),
        eval_limit=32,
        calib_size=16,
        threads=1,
        targets=("onnx",),
    )
    report = bench_model(checkpoint, cfg)
    rows = {r["target"]: r for r in report["rows"]}
    for target in ("trt-fp32", "trt-fp16", "trt-int8"):
        assert rows[target]["status"] == "ok" and rows[target]["simulated"], rows[target]
        assert rows[target]["agreement"] >= 0.75
    assert "SIMULATED TensorRT" in render(report)
    assert not any("trt-" in w for w in report["warnings"])  # no speed verdict on simulated rows


@pytest.mark.slow
def test_outputs_do_not_depend_on_the_simulated_version(checkpoint: Path, tmp_path: Path) -> None:
    """The same FP32 engine on every version: the same logits as ONNX Runtime gives the FP32 ONNX."""
    logits = []
    for version in VERSIONS:
        with trtsim.simulate(version):
            out = tmp_path / version / "f.engine"
            ghost_deploy.export(checkpoint, config("trt-fp32", out), QUIET)
            with Bundle.open(ghost_deploy.pack([out], tmp_path / version / "b")["bundle"]) as opened:
                logits.append(opened.infer(opened.preprocess(IMAGE)[None])["logits"])
    for other in logits[1:]:
        np.testing.assert_allclose(other, logits[0], atol=1e-5)


@pytest.mark.slow
def test_an_engine_that_fails_its_gate_leaves_the_previous_engine_in_place(tmp_path: Path) -> None:
    engine = tmp_path / "g.engine"
    with trtsim.simulate("10.3"):
        ghost_deploy.export(TINY_MODEL, config("trt-fp16", engine), QUIET)
        before = engine.read_bytes(), (tmp_path / "g.engine.json").read_text()
        strict = Tolerances(max_abs=1e-9, rtol=0.0)  # FP16 cannot meet it
        with pytest.raises(VerificationFailed, match=r"g\.engine was left as it was"):
            ghost_deploy.export(TINY_MODEL, config("trt-fp16", engine, precision_tolerances=strict), QUIET)
    assert (engine.read_bytes(), (tmp_path / "g.engine.json").read_text()) == before
    failed = json.loads((tmp_path / "g.failed.engine.json").read_text())
    assert failed["status"] == "verification_failed" and failed["engine"]["path"].endswith("g.failed.engine")
    assert (tmp_path / "g.failed.engine").is_file() and (tmp_path / "g.failed.engine.layers.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries, no lock left
