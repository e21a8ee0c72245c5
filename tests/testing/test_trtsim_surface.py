"""The simulated `tensorrt` has exactly one version's names (trt-api-V.json), with pybind11's call rules."""

from __future__ import annotations

import inspect
import json
from importlib import resources
from typing import Any

import pytest

from ghost_deploy.testing import trtsim
from tests.testing.simkit import start

ALL = list(trtsim.VERSIONS)


def api(version: str) -> dict[str, Any]:
    text = resources.files("ghost_deploy.testing.trtsim").joinpath("api").joinpath(f"trt-api-{version}.json")
    data: dict[str, Any] = json.loads(text.read_text())
    return data


@pytest.mark.parametrize("version", ALL)
def test_every_name_of_the_version_exists(version: str) -> None:
    trt = start(version).trt
    spec = api(version)
    for name, cls in spec["classes"].items():
        target = getattr(trt, name)
        for member in [*cls["methods"], *cls["static_methods"], *cls["properties"], *cls["attributes"]]:
            inspect.getattr_static(target, member)  # no descriptor runs: AttributeError if absent
    for qualname, enum in spec["enums"].items():
        target = trt
        for part in qualname.split("."):
            target = getattr(target, part)
        assert sorted(target.__members__) == sorted(enum["values"])
        members = list(target.__members__.values())
        assert len({int(m) for m in members}) == len(set(members))  # two names of one integer: one member
    for name in [*spec["module_functions"], *spec["module_attributes"]]:
        assert hasattr(trt, name)


@pytest.mark.parametrize(
    ("version", "owner", "name"),
    [
        ("11.1", "BuilderFlag", "FP16"),
        ("11.1", "NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),
        ("10.3", "Builder", "build_engine"),
        ("10.3", "IBuilderConfig", "max_workspace_size"),
        ("10.3", "IExecutionContext", "execute_async_v2"),
        ("11.1", "IBuilderConfig", "int8_calibrator"),
        ("8.5", "Runtime", "engine_host_code_allowed"),
        ("8.5", "IBuilderConfig", "builder_optimization_level"),
        ("8.6", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
        ("10.3", "HardwareCompatibilityLevel", "SAME_COMPUTE_CAPABILITY"),
        ("11.1", "Builder", "platform_has_fast_fp16"),
    ],
)
def test_a_name_the_version_lacks_raises_attribute_error(version: str, owner: str, name: str) -> None:
    trt = start(version).trt
    with pytest.raises(AttributeError):
        getattr(getattr(trt, owner), name)


def test_unknown_names_raise_attribute_error_everywhere() -> None:
    env = start("10.3")
    trt = env.trt
    config = trt.Builder(env.logger).create_builder_config()
    for obj in (trt, trt.Builder, config, trt.BuilderFlag, trt.BuilderFlag.FP16):
        with pytest.raises(AttributeError):
            obj.no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        config.no_such_name = 1
    with pytest.raises(AttributeError):
        trt.IInt8Calibrator2  # noqa: B018


@pytest.mark.parametrize(
    ("version", "expected"), [("8.5", "8.5.2.2"), ("8.6", "8.6.1"), ("10.13", "10.13.0"), ("11.1", "11.1.0")]
)
def test_version_string_is_what_the_version_prints(version: str, expected: str) -> None:
    assert start(version).trt.__version__ == expected  # trt-api: 8.5 substitutes TRT_VERSION, later MAJMINPATCH


def test_pybind_argument_rules() -> None:
    env = start("10.3")
    trt = env.trt
    config = trt.Builder(env.logger).create_builder_config()
    config.set_flag(flag=trt.BuilderFlag.FP16)  # named arguments go by their bound name
    assert config.get_flag(trt.BuilderFlag.FP16)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(flg=trt.BuilderFlag.FP16)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(0)  # an int is no BuilderFlag
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag()
    with pytest.raises(TypeError, match="incompatible function arguments"):
        trt.get_builder_plugin_registry(arg0=trt.APILanguage.CPP)  # bound without a name: positional only
    with pytest.raises(
        NotImplementedError, match=r"simulated: tensorrt\.get_builder_plugin_registry on TensorRT 10\.3"
    ):
        trt.get_builder_plugin_registry(trt.APILanguage.CPP)
    assert trt.Logger().min_severity == trt.Logger.WARNING  # an argument with a default may be omitted


def test_properties_keep_their_access() -> None:
    env = start("10.13")
    trt = env.trt
    builder = trt.Builder(env.logger)
    with pytest.raises(AttributeError):
        builder.num_DLA_cores = 4  # read-only
    runtime = trt.Runtime(env.logger)
    with pytest.raises(AttributeError):
        runtime.gpu_allocator  # noqa: B018 - write-only
    runtime.engine_host_code_allowed = True
    assert runtime.engine_host_code_allowed is True


def test_unsimulated_names_exist_but_raise_not_implemented() -> None:
    env = start("8.6")
    network = env.trt.Builder(env.logger).create_network(0)
    assert callable(network.add_input)
    with pytest.raises(NotImplementedError, match=r"simulated: INetworkDefinition.add_input on TensorRT 8\.6\.1\.5"):
        network.add_input("x", env.trt.float32, (1, 3))


def test_enums_behave_like_pybind_enums() -> None:
    trt = start("8.5").trt
    flag = trt.BuilderFlag.INT8
    assert flag.name == "INT8" and isinstance(int(flag), int) and trt.BuilderFlag(int(flag)) is flag
    assert flag != int(flag) and flag != trt.BuilderFlag.FP16 and {flag: 1}[trt.BuilderFlag.INT8] == 1
    severity = trt.ILogger.Severity
    assert severity.ERROR < severity.WARNING and trt.Logger.ERROR is severity.ERROR  # arithmetic, export_values
    assert trt.ILogger.VERBOSE is severity.VERBOSE and trt.float16 == trt.DataType.HALF
    assert trt.DataType.HALF.itemsize == 2 and trt.volume((2, 3, 4)) == 24
    with pytest.raises(AttributeError):
        flag.name = "FP16"


def test_dims_and_host_memory() -> None:
    env = start("10.3")
    trt = env.trt
    dims = trt.Dims([1, 3, 224, 224])
    assert len(dims) == 4 and dims[1] == 3 and tuple(dims) == (1, 3, 224, 224) and dims == (1, 3, 224, 224)
    assert str(dims) == "(1, 3, 224, 224)" and tuple(trt.Dims2(5, 6)) == (5, 6)
    with pytest.raises(IndexError):
        dims[4]
    cache = trt.Builder(env.logger).create_builder_config().create_timing_cache(b"")
    blob = cache.serialize()
    assert bytes(blob) == memoryview(blob).tobytes() and blob.nbytes == len(bytes(blob))
    with pytest.raises(AttributeError):
        blob.decode  # noqa: B018 - IHostMemory is no bytes object on the surface
    with pytest.raises(TypeError):
        trt.IHostMemory()


def test_deprecated_members_still_work_and_warn() -> None:
    env = start("8.5")
    config = env.trt.Builder(env.logger).create_builder_config()
    with pytest.warns(DeprecationWarning, match="set_memory_pool_limit"):
        config.max_workspace_size = 1 << 20
    assert config.get_memory_pool_limit(env.trt.MemoryPoolType.WORKSPACE) == 1 << 20
    env2_calibrator = "int8_calibrator"
    trtsim.uninstall()
    env = start("10.3")
    config = env.trt.Builder(env.logger).create_builder_config()
    with pytest.warns(DeprecationWarning, match="Deprecated in TensorRT 10.1"):
        setattr(config, env2_calibrator, None)


def test_trampoline_base_methods_are_pure_virtual() -> None:
    trt = start("10.3").trt
    with pytest.raises(RuntimeError, match="pure virtual"):
        trt.ILogger().log(trt.ILogger.ERROR, "x")

    class Half(trt.IProfiler):  # type: ignore[misc,name-defined]
        pass

    with pytest.raises(RuntimeError, match="pure virtual"):
        Half().report_layer_time("conv", 1.0)
    with pytest.raises(TypeError, match="No constructor defined"):
        trt.ICudaEngine()
