"""Small truths (issue 18, point 8): C++ enum integers, aliases, IHostMemory as a buffer, hasattr on what is
real but not simulated. Each value cited here is a line of that release's header (docs/reference/tensorrt.md s12).
"""

from __future__ import annotations

import json
import pickle
from importlib import resources
from pathlib import Path

import pytest

from ghost_deploy.testing import trtsim
from tests.testing.simkit import build, classifier, deserialize, start

ALL = list(trtsim.VERSIONS)


def enum_table(version: str) -> dict[str, dict[str, int]]:
    folder = resources.files("ghost_deploy.testing.trtsim").joinpath("api")
    raw = json.loads(folder.joinpath(f"trt-enums-{version}.json").read_text())
    return {q: {k: v["value"] for k, v in e["values"].items()} for q, e in raw["enums"].items()}


@pytest.mark.parametrize("version", ALL)
def test_every_enum_value_is_the_cpp_integer_of_its_enumerator(version: str) -> None:
    trt = start(version).trt
    for qualname, values in enum_table(version).items():
        cls = trt
        for part in qualname.split("."):
            cls = getattr(cls, part)
        assert {name: int(member) for name, member in cls.__members__.items()} == values, qualname
        assert all(cls(number).value == number for number in values.values())


@pytest.mark.parametrize(
    ("version", "enum", "member", "number"),
    [
        ("10.3", "DataType", "INT8", 2),  # NvInferRuntimeBase.h: kINT8 = 2 (bound after BF16 = 7)
        ("10.3", "DataType", "BF16", 7),
        ("8.5", "DataType", "INT8", 2),  # NvInferRuntimeCommon.h (8.5): kINT8 = 2
        ("10.13", "DataType", "E8M0", 11),
        ("10.3", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED", 1),  # NvInfer.h: kSTRONGLY_TYPED = 1
        ("11.1", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED", 0),  # 11.1 NvInfer.h: kSTRONGLY_TYPED = 0
        ("10.3", "BuilderFlag", "STRIP_PLAN", 19),
        ("8.6", "ErrorCode", "UNSUPPORTED_NODE", 8),  # NvOnnxParser.h (parser 6ba67d34): kUNSUPPORTED_NODE = 8
    ],
)
def test_enum_integers_cited_from_the_headers(version: str, enum: str, member: str, number: int) -> None:
    trt = start(version).trt
    assert int(getattr(getattr(trt, enum), member)) == number


def test_aliases_are_one_member_and_one_flag_bit() -> None:
    env = start("10.3")
    trt = env.trt
    flag = trt.BuilderFlag
    assert flag.WEIGHTLESS is flag.STRIP_PLAN and len({flag.WEIGHTLESS, flag.STRIP_PLAN}) == 1
    assert flag.STRIP_PLAN.name == "WEIGHTLESS"  # pyCore.cpp binds WEIGHTLESS first; pybind11 names the first
    config = trt.Builder(env.logger).create_builder_config()
    config.clear_flag(flag.TF32)
    config.set_flag(flag.WEIGHTLESS)
    assert config.get_flag(flag.STRIP_PLAN) and config.flags == 1 << 19
    config.flags = 1 << 19
    assert config.get_flag(flag.WEIGHTLESS) and config.flags == 1 << 19


def test_host_memory_is_a_buffer_not_bytes(tmp_path: Path) -> None:
    env = start("10.13")
    trt = env.trt
    built = build(env, classifier())
    assert built is not None
    plan = deserialize(env, built).serialize()
    assert not isinstance(plan, (bytes, bytearray)) and isinstance(plan, trt.IHostMemory)
    data = bytes(plan)
    assert memoryview(plan).tobytes() == data and plan.nbytes == len(data) and plan.dtype == trt.DataType.UINT8
    with open(tmp_path / "e.plan", "wb") as handle:
        handle.write(plan)  # the buffer protocol is what a file write takes
    assert (tmp_path / "e.plan").read_bytes() == data
    assert plan != data
    for use in (len, list, pickle.dumps, lambda p: p[:4], lambda p: p + b"", lambda p: b"TRT" in p):
        with pytest.raises(TypeError):
            use(plan)
    with pytest.raises(AttributeError):
        plan.decode  # noqa: B018


def test_an_unsimulated_property_exists_and_fails_loudly_when_used() -> None:
    env = start("10.3")
    trt = env.trt
    builder = trt.Builder(env.logger)
    assert hasattr(builder, "max_threads") and hasattr(trt.Dims, "MAX_DIMS")  # True on TensorRT
    value = builder.max_threads
    for use in (bool, int, str, lambda v: v + 1, lambda v: v == 4, lambda v: v.anything):
        with pytest.raises(NotImplementedError, match=r"simulated: Builder\.max_threads on TensorRT 10\.3"):
            use(value)
    assert not hasattr(builder, "no_such_name")
