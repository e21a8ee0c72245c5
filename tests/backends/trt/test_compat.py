"""The pre-deserialization check: what TensorRT's version and hardware compatibility rules allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghost_deploy.backends.trt import compat
from ghost_deploy.backends.trt.compat import EngineOrigin, check_compatible
from ghost_deploy.errors import InputError
from ghost_deploy.report import ArtifactReport


def test_same_version_and_gpu_runs() -> None:
    check_compatible(EngineOrigin("10.3.0", "8.7"), "10.3.0", "8.7")


@pytest.mark.parametrize(
    ("here", "message"), [("10.4.0", "this machine has TensorRT 10.4.0"), ("8.6.1", "this machine has TensorRT 8.6.1")]
)
def test_other_version_is_refused_with_what_was_built_where(here: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        check_compatible(EngineOrigin("10.3.0", "8.7"), here, "8.7")
    assert "built with TensorRT 10.3.0 for compute capability 8.7" in str(err.value)


def test_version_compatible_runs_on_newer_same_major_and_on_the_next_major_tensorrt_supports() -> None:
    origin = EngineOrigin("10.3.0", "8.9", version_compatible=True)
    check_compatible(origin, "10.13.0", "8.9")
    check_compatible(origin, "11.4.0", "8.9")  # tensorrt.md s7: TRT 10 VC plans run on a TRT 11 runtime
    check_compatible(EngineOrigin("8.6.1", "8.9", version_compatible=True), "10.3.0", "8.9")  # and 8 on 10
    for built, here in (("10.3.0", "10.2.0"), ("8.6.1", "11.1.0"), ("8.6.1", "9.2.0"), ("11.1.0", "10.13.0")):
        with pytest.raises(InputError, match="version-compatible"):
            check_compatible(EngineOrigin(built, "8.9", version_compatible=True), here, "8.9")


def test_every_part_of_the_version_must_match_even_the_build() -> None:
    check_compatible(EngineOrigin("10.3.0.26", "8.7"), "10.3.0.26", "8.7")
    check_compatible(EngineOrigin("10.3.0.26", "8.7"), "10.3.0", "8.7")  # a 3-part version names no build
    with pytest.raises(InputError, match="exact TensorRT"):
        check_compatible(EngineOrigin("10.3.0.26", "8.7"), "10.3.0.30", "8.7")


def test_ampere_plus_does_not_exist_on_jetson() -> None:
    origin = EngineOrigin("10.3.0", "8.7", hardware_compatibility="AMPERE_PLUS")
    check_compatible(origin, "10.3.0", "8.7")
    with pytest.raises(InputError, match="Jetson does not support"):
        check_compatible(origin, "10.3.0", "8.7", jetson_here=True)


def test_other_gpu_needs_hardware_compatibility() -> None:
    with pytest.raises(InputError, match=r"compute capability 9\.0.*--hardware-compatibility"):
        check_compatible(EngineOrigin("10.3.0", "8.7"), "10.3.0", "9.0")
    check_compatible(EngineOrigin("10.3.0", "8.6", hardware_compatibility="AMPERE_PLUS"), "10.3.0", "9.0")
    with pytest.raises(InputError, match=r"compute capability 7\.5"):
        check_compatible(EngineOrigin("10.3.0", "8.6", hardware_compatibility="AMPERE_PLUS"), "10.3.0", "7.5")
    with pytest.raises(InputError):
        check_compatible(
            EngineOrigin("10.13.0", "8.9", hardware_compatibility="SAME_COMPUTE_CAPABILITY"), "10.13.0", "8.6"
        )


def test_origin_from_an_engine_report() -> None:
    report = {
        "trt_version": {"version": "10.3.0"},
        "engine": {"gpus": [{"compute_capability": "8.7"}]},
        "build_plan": {"version_compatible": True, "hardware_compatibility": None},
    }
    assert EngineOrigin.from_report(ArtifactReport(Path("e.engine.json"), report)) == EngineOrigin(
        "10.3.0", "8.7", True, None
    )


def test_a_report_is_trusted_only_for_the_bytes_it_describes(tmp_path: Path) -> None:
    import json

    from ghost_deploy.backends.trt.compat import trusted_origin
    from ghost_deploy.fileio import sha256_file

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan bytes")
    report = {"trt_version": {"version": "10.3.0"}, "build_plan": {}, "engine": {"built": False, "why_not": "no TRT"}}
    (tmp_path / "m.engine.json").write_text(json.dumps(report))
    assert trusted_origin(engine) is None  # written on a PC without TensorRT: says nothing of this engine
    report["engine"] = {"built": True, "sha256": "0" * 64, "gpus": [{"compute_capability": "8.7"}]}
    (tmp_path / "m.engine.json").write_text(json.dumps(report))
    assert trusted_origin(engine) is None  # an older build's report beside a newer engine
    report["engine"]["sha256"] = sha256_file(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps(report))
    assert trusted_origin(engine) == EngineOrigin("10.3.0", "8.7")


@pytest.mark.parametrize("text", ["1" * 5000 + ".3", "10." + "9" * 5000, "1234567890.3"])
def test_a_version_of_thousands_of_digits_is_bad_input_not_a_value_error(text: str) -> None:
    """A report or manifest naming a 5000-digit TensorRT version: InputError (exit 2), its text cut in the message."""
    with pytest.raises(InputError, match="is not a version number") as caught:
        compat.version_parts(text)
    assert len(str(caught.value)) < 200
