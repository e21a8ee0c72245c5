"""The pre-deserialization check: what TensorRT's version and hardware compatibility rules allow."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_version_compatible_runs_on_newer_same_major_only() -> None:
    origin = EngineOrigin("10.3.0", "8.9", version_compatible=True)
    check_compatible(origin, "10.13.0", "8.9")
    for here in ("10.2.0", "11.4.0"):
        with pytest.raises(InputError, match="version-compatible"):
            check_compatible(origin, here, "8.9")


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
