"""A bundle runs what the user chose (issue 21, point 3): `run --artifact NAME|TARGET`, `Bundle.open(artifact=)`,
`pack --default`, the default rule in `inspect`; and ONNX packed with `--tensorrt` runs as an engine built and
verified on a (simulated) device, on ONNX Runtime elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import ghost_deploy
from ghost_deploy.bundle.runtime import Bundle
from ghost_deploy.bundle.select import DEFAULT_RULE
from ghost_deploy.errors import InputError
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from tests.helpers import DIGITS, TINY_MODEL, small_export_config

QUIET = Steps(echo=lambda text: None)
IMAGE = next((DIGITS / "test" / "4").glob("*.png"))
TARGETS = ("onnx", "onnx-fp16", "ort-int8", "onnx-int8")


@pytest.fixture(scope="session")
def four(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model as FP32, FP16, ort-int8 and onnx-int8 ONNX (the reduced ones made from the FP32 ONNX)."""
    out = tmp_path_factory.mktemp("four")
    trtsim.uninstall()
    fp32 = ghost_deploy.export(TINY_MODEL, small_export_config("onnx", out / "tiny.onnx"), QUIET).artifact
    paths = {"onnx": fp32}
    for target in TARGETS[1:]:
        paths[target] = ghost_deploy.export(
            fp32, small_export_config(target, out / f"tiny.{target}.onnx"), QUIET
        ).artifact
    return paths


@pytest.fixture()
def no_simulation() -> Iterator[None]:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from ghost_deploy.cli.main import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_the_user_chooses_by_name_or_target_and_pack_sets_the_default(
    four: dict[str, Path], tmp_path: Path, no_simulation: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b.tar.gz"
    code, _, err = _cli(capsys, "pack", *(str(four[t]) for t in TARGETS), "-o", str(bundle), "--default", "ort-int8")
    assert code == 0, err
    with Bundle.open(bundle) as opened:
        assert opened.artifact["target"] == "ort-int8" and "default" in opened.select().why
    for wanted, target in (("onnx-fp16", "onnx-fp16"), ("tiny.onnx-int8.onnx", "onnx-int8"), ("onnx", "onnx")):
        with Bundle.open(bundle, artifact=wanted) as opened:
            assert opened.artifact["target"] == target
            assert opened.predict(IMAGE, top_k=1)[0].label == "4"
    with pytest.raises(InputError, match=r"'trt-int8' is neither a file nor a target .* tiny\.ort-int8\.onnx"):
        Bundle.open(bundle, artifact="trt-int8")
    code, out, err = _cli(capsys, "run", str(bundle), str(IMAGE), "--artifact", "onnx-fp16", "--json")
    assert code == 0 and json.loads(out)["artifact"] == "tiny.onnx-fp16.onnx", err
    code, out, _ = _cli(capsys, "inspect", str(bundle))
    assert code == 0 and "tiny.ort-int8.onnx (onnx, ort-int8, int8), " in out and "the bundle's default" in out
    assert "runs here: tiny.ort-int8.onnx: the bundle's default (pack --default) (on ONNX Runtime)" in out
    assert f"default rule: {DEFAULT_RULE}" in out
    code, _, err = _cli(capsys, "pack", str(four["onnx"]), "-o", str(tmp_path / "c"), "--default", "trt-fp16")
    assert code == 2 and "pack --default 'trt-fp16'" in err and not (tmp_path / "c").exists()


def test_without_a_default_the_rule_picks_the_first_onnx(
    four: dict[str, Path], tmp_path: Path, no_simulation: None
) -> None:
    packed = ghost_deploy.pack([four["ort-int8"], four["onnx"]], tmp_path / "b")
    assert "default_artifact" not in packed["manifest"]
    with Bundle.open(tmp_path / "b") as opened:
        assert opened.artifact["target"] == "ort-int8" and "the first ONNX artifact" in opened.select().why


def test_onnx_packed_for_tensorrt_is_built_on_the_device_and_runs_on_onnx_runtime_elsewhere(
    four: dict[str, Path], tmp_path: Path, no_simulation: None
) -> None:
    packed = ghost_deploy.pack([four["onnx-int8"]], tmp_path / "b", tensorrt=True)
    build = packed["manifest"]["artifacts"][0]["device_build"]
    assert build["target"] == "trt-int8" and build["onnx"]["weak"]["file"] == "tiny.onnx-int8.onnx"  # the artifact
    assert build["onnx"]["strong"]["kind"] == "qdq-fp16" and "same scales" in build["made_at_pack"]["qdq-fp16"]
    with Bundle.open(tmp_path / "b") as opened:
        assert opened.select().backend == "onnxruntime" and opened.engine is None
        on_cpu = opened.predict(IMAGE, top_k=1)[0].label
    for version in ("10.3", "11.1"):
        with trtsim.simulate(version), Bundle.open(tmp_path / "b", cache_dir=tmp_path / "cache") as opened:
            assert opened.engine is not None and opened.engine.source == "built"
            assert opened.engine.verification is not None and opened.engine.verification["passed"]
            assert opened.predict(IMAGE, top_k=1)[0].label == on_cpu == "4"
    with pytest.raises(InputError, match="--tensorrt applies to onnx, onnx-fp16 and onnx-int8"):
        ghost_deploy.pack([four["ort-int8"]], tmp_path / "c", tensorrt=True)


def test_onnx_packed_for_tensorrt_keeps_the_limits_its_export_was_judged_by(
    four: dict[str, Path], tmp_path: Path, no_simulation: None
) -> None:
    """A user who accepted an INT8 model with lower limits (--int8-min-cosine 0.5) gets a device engine judged by
    the same limits, not the defaults that would reject it (before: the precision's defaults)."""
    import dataclasses

    from ghost_deploy.config import Tolerances

    lenient = dataclasses.replace(Tolerances.for_precision("int8"), min_cosine=0.5, min_agreement=0.5)
    cfg = small_export_config("onnx-int8", tmp_path / "lenient.onnx", precision_tolerances=lenient)
    artifact = ghost_deploy.export(four["onnx"], cfg, QUIET).artifact
    build = ghost_deploy.pack([artifact], tmp_path / "b", tensorrt=True)["manifest"]["artifacts"][0]["device_build"]
    assert build["tolerances"]["min_cosine"] == 0.5 and build["tolerances"]["min_agreement"] == 0.5
