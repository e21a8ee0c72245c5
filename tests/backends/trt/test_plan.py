"""The build decision for TensorRT 8.5 (JetPack 5), 8.6 / 10.3 (JetPack 6), 10.13 (JetPack 7) and 11.4 (PyPI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ghost_deploy.backends.trt.plan import TARGETS, BuildRequest, parse_trt_version, plan_build
from ghost_deploy.errors import InputError

VERSIONS = ("8.5.2", "8.6.1", "10.3.0", "10.13.0", "11.4.0")
ALL_ONNX = {
    "onnx_fp32": Path("m.onnx"),
    "onnx_fp16": Path("m.fp16.onnx"),
    "onnx_qdq_fp32": Path("m.int8.onnx"),
    "onnx_qdq_fp16": Path("m.int8-fp16.onnx"),
}


def request(target: str, **kw: Any) -> BuildRequest:
    """A request for a 3x64x64 input with every ONNX file at hand, overridden by `kw`."""
    return BuildRequest(**{"target": target, "input_name": "input", "input_chw": (3, 64, 64), **ALL_ONNX, **kw})


def is_11(version: str) -> bool:
    return version.startswith("11.")


KIND_FIELD = {"fp32": "onnx_fp32", "fp16": "onnx_fp16", "qdq-fp32": "onnx_qdq_fp32", "qdq-fp16": "onnx_qdq_fp16"}


# (target, weakly typed 8.5-10.x, TensorRT 11): the builder flags and the ONNX parsed
EXPECTED = {
    "trt-fp32": ((), "fp32", (), "fp32"),
    "trt-fp16": (("FP16",), "fp32", (), "fp16"),
    "trt-int8": (("INT8", "FP16"), "qdq-fp32", (), "qdq-fp16"),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_flags_onnx_and_typing_per_version(version: str, target: str) -> None:
    plan = plan_build(version, request(target))
    weak_flags, weak_kind, strong_flags, strong_kind = EXPECTED[target]
    assert plan.strongly_typed is is_11(version)
    assert plan.builder_flags == (strong_flags if is_11(version) else weak_flags)
    assert plan.onnx_kind == (strong_kind if is_11(version) else weak_kind)
    assert plan.onnx_path == ALL_ONNX[KIND_FIELD[plan.onnx_kind]]
    assert plan.network_flags == (("EXPLICIT_BATCH",) if version.startswith("8.") else ())
    assert plan.calibrator == "none"
    assert plan.parser_flags == ()


@pytest.mark.parametrize("version", ["10.3.0", "10.13.0"])
@pytest.mark.parametrize("target", TARGETS)
def test_strong_typing_opt_in_on_10_uses_typed_onnx_and_no_precision_flags(version: str, target: str) -> None:
    plan = plan_build(version, request(target, strongly_typed=True))
    assert plan.strongly_typed
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.builder_flags == ()
    assert plan.onnx_kind == {"trt-fp32": "fp32", "trt-fp16": "fp16", "trt-int8": "qdq-fp16"}[target]


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1"])
def test_strong_typing_refused_before_9(version: str) -> None:
    with pytest.raises(InputError, match=r"STRONGLY_TYPED.*9\.0"):
        plan_build(version, request("trt-fp16", strongly_typed=True))


def test_weak_typing_refused_on_11() -> None:
    with pytest.raises(InputError, match="strongly typed networks only"):
        plan_build("11.4.0", request("trt-fp16", strongly_typed=False))


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0", "10.13.0"])
def test_implicit_int8_reads_cache_or_calibrates_on_device(version: str) -> None:
    cached = plan_build(version, request("trt-int8", int8_mode="implicit", calibration_cache=Path("c.cache")))
    assert (cached.calibrator, cached.calibration_cache, cached.onnx_kind) == ("cache", Path("c.cache"), "fp32")
    assert cached.builder_flags == ("INT8", "FP16")
    device = plan_build(version, request("trt-int8", int8_mode="implicit"))
    assert device.calibrator == "device"
    assert device.calibration_cache is None
    assert any("trtexec cannot" in note for note in device.notes)
    deprecated = any("deprecated since TensorRT 10.1" in note for note in cached.notes)
    assert deprecated is version.startswith("10.")


def test_implicit_int8_refused_on_11_with_reason() -> None:
    with pytest.raises(InputError, match=r"calibrators were removed in 11\.0.*--high-precision fp16"):
        plan_build("11.4.0", request("trt-int8", int8_mode="implicit", calibration_cache=Path("c.cache")))


def test_implicit_int8_refused_with_strong_typing_on_10() -> None:
    with pytest.raises(InputError, match="weakly typed"):
        plan_build("10.13.0", request("trt-int8", int8_mode="implicit", strongly_typed=True))


@pytest.mark.parametrize(
    ("version", "target", "missing", "command"),
    [
        ("11.4.0", "trt-int8", "onnx_qdq_fp16", "`ghost-export MODEL --target onnx-int8 --high-precision fp16`"),
        ("10.3.0", "trt-int8", "onnx_qdq_fp32", "`ghost-export MODEL --target onnx-int8`"),
        ("8.5.2", "trt-int8", "onnx_qdq_fp32", "`ghost-export MODEL --target onnx-int8`"),
        ("11.4.0", "trt-fp16", "onnx_fp16", "`ghost-export MODEL --target onnx-fp16`"),
        ("10.13.0", "trt-fp16", "onnx_fp32", "`ghost-export MODEL --target onnx`"),
        ("8.6.1", "trt-fp32", "onnx_fp32", "`ghost-export MODEL --target onnx`"),
    ],
)  # fmt: skip
def test_missing_onnx_names_the_command_that_makes_it(version: str, target: str, missing: str, command: str) -> None:
    with pytest.raises(InputError, match=f"--target {target}") as err:
        plan_build(version, request(target, **{missing: None}))
    assert command in str(err.value)


def test_only_the_needed_onnx_is_required() -> None:
    plan = plan_build("10.3.0", request("trt-int8", onnx_fp32=None, onnx_fp16=None, onnx_qdq_fp16=None))
    assert plan.onnx_kind == "qdq-fp32"


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_batch_becomes_one_profile(version: str) -> None:
    plan = plan_build(version, request("trt-fp16", dynamic_batch=(1, 4, 8)))
    assert plan.profile is not None
    assert (plan.profile.min, plan.profile.opt, plan.profile.max) == ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))
    assert plan.profile.input_name == "input"
    assert plan.input_shape == (4, 3, 64, 64)


def test_fixed_batch_has_no_profile() -> None:
    plan = plan_build("10.3.0", request("trt-fp32", batch=2))
    assert plan.profile is None
    assert plan.input_shape == (2, 3, 64, 64)


def test_dynamic_implicit_int8_sets_a_calibration_profile() -> None:
    plan = plan_build("8.6.1", request("trt-int8", int8_mode="implicit", dynamic_batch=(1, 2, 4)))
    assert plan.calibration_profile


@pytest.mark.parametrize("bad", [(0, 1, 2), (4, 2, 8), (1, 8, 4)])
def test_bad_dynamic_batch_refused(bad: tuple[int, int, int]) -> None:
    with pytest.raises(InputError, match="MIN:OPT:MAX"):
        request("trt-fp32", dynamic_batch=bad)


@pytest.mark.parametrize("version", VERSIONS)
def test_optimization_level_only_from_8_6(version: str) -> None:
    if version == "8.5.2":
        with pytest.raises(InputError, match=r"optimization level needs TensorRT 8\.6"):
            plan_build(version, request("trt-fp32", optimization_level=5))
    else:
        assert plan_build(version, request("trt-fp32", optimization_level=5)).optimization_level == 5
    assert plan_build(version, request("trt-fp32")).optimization_level is None


@pytest.mark.parametrize("version", VERSIONS)
def test_workspace_in_bytes_through_set_memory_pool_limit(version: str) -> None:
    plan = plan_build(version, request("trt-fp32", workspace_mib=256))
    assert plan.workspace_bytes == 256 * 1024 * 1024
    assert plan.workspace_api is not None
    assert "set_memory_pool_limit" in plan.workspace_api


@pytest.mark.parametrize(
    ("version", "level", "ok"),
    [("8.5.2", "ampere+", False), ("8.6.1", "ampere+", True), ("10.3.0", "same_compute_capability", False),
     ("10.13.0", "same_compute_capability", True), ("11.4.0", "same_compute_capability", True)],
)  # fmt: skip
def test_hardware_compatibility_where_supported(version: str, level: str, ok: bool) -> None:
    req = request("trt-fp16", hardware_compatibility=level)
    if ok:
        assert plan_build(version, req).hardware_compatibility in ("AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
    else:
        with pytest.raises(InputError, match="needs TensorRT"):
            plan_build(version, req)


@pytest.mark.parametrize("version", VERSIONS)
def test_version_compatible_from_8_6(version: str) -> None:
    req = request("trt-fp16", version_compatible=True)
    if version == "8.5.2":
        with pytest.raises(InputError, match=r"version-compatible engines need TensorRT 8\.6"):
            plan_build(version, req)
    else:
        assert "VERSION_COMPATIBLE" in plan_build(version, req).builder_flags


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0"])
def test_dla_on_jetpack_5_and_6_uses_gpu_fallback_and_precision_flags(version: str) -> None:
    plan = plan_build(version, request("trt-int8", dla_core=1))
    assert plan.dla_core == 1
    assert plan.builder_flags == ("INT8", "FP16", "GPU_FALLBACK")


@pytest.mark.parametrize("version", ["10.13.0", "11.4.0"])
def test_dla_refused_where_the_version_has_none(version: str) -> None:
    with pytest.raises(InputError, match=f"DLA is not supported by TensorRT {version}"):
        plan_build(version, request("trt-fp16", dla_core=0))


def test_dla_on_11_4_1_is_strongly_typed_and_adjusts_the_parser() -> None:
    plan = plan_build("11.4.1", request("trt-fp16", dla_core=0))
    assert plan.builder_flags == ("GPU_FALLBACK",)
    assert plan.parser_flags == ("ADJUST_FOR_DLA",)
    assert plan.onnx_kind == "fp16"


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"target": "trt-fp32"}, "FP16 or INT8 only"),
     ({"hardware_compatibility": "ampere+"}, "cannot be combined with DLA"),
     ({"version_compatible": True}, "not built for DLA")],
)  # fmt: skip
def test_dla_combinations_refused(kw: dict[str, Any], message: str) -> None:
    req = request(**{"target": "trt-fp16", "dla_core": 0, **kw})
    with pytest.raises(InputError, match=message):
        plan_build("8.6.1", req)


def test_deprecated_flags_noted_from_10_12() -> None:
    assert any("10.12" in note for note in plan_build("10.13.0", request("trt-fp16")).notes)
    assert not any("10.12" in note for note in plan_build("10.3.0", request("trt-fp16")).notes)


def test_versions_parse_and_old_ones_are_refused() -> None:
    assert parse_trt_version("10.3.0.26") == (10, 3, 0)
    assert plan_build("10.13.0.35", request("trt-fp32")).version_text == "10.13.0"
    with pytest.raises(InputError, match=r"older than 8\.5"):
        plan_build("8.2.1", request("trt-fp32"))
    with pytest.raises(InputError, match="not a version number"):
        plan_build("latest", request("trt-fp32"))


def test_unknown_target_refused() -> None:
    with pytest.raises(InputError, match="trt-fp32, trt-fp16, trt-int8"):
        request("trt-bf16")


def test_plan_to_dict_is_json_ready() -> None:
    import json

    data = plan_build("10.3.0", request("trt-int8", timing_cache=Path("t.cache"))).to_dict()
    assert json.loads(json.dumps(data))["onnx_path"] == "m.int8.onnx"


@pytest.mark.parametrize(
    ("version", "given", "kind", "flags"),
    [
        ("11.1.0", None, "qdq-fp16", ()),
        ("11.1.0", "fp16", "qdq-fp16", ()),
        ("11.1.0", "fp32", "qdq-fp32", ()),  # strongly typed: FP32 unquantized layers are the user's choice
        ("10.3.0", None, "qdq-fp32", ("INT8", "FP16")),
        ("10.3.0", "fp32", "qdq-fp32", ("INT8",)),  # no FP16 flag: the unquantized layers stay FP32
    ],
)
def test_high_precision_given_by_the_user_wins(
    version: str, given: str | None, kind: str, flags: tuple[str, ...]
) -> None:
    plan = plan_build(version, request("trt-int8", high_precision=given))
    assert plan.onnx_kind == kind and plan.builder_flags == flags


def test_high_precision_that_cannot_hold_is_refused_with_the_reason() -> None:
    with pytest.raises(InputError, match=r"strongly typed build honours.*TensorRT 10\.3\.0 builds weakly typed"):
        plan_build("10.3.0", request("trt-int8", high_precision="fp16"))
    with pytest.raises(InputError, match="trt-fp16 has none"):
        request("trt-fp16", high_precision="fp32")
