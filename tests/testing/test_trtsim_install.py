"""Installing and removing a simulation leaves `sys.modules` as it was, and never hides a real TensorRT."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from ghost_deploy.testing import trtsim
from ghost_deploy.testing.trtsim import registry


def test_uninstall_restores_sys_modules() -> None:
    stubs = importlib.import_module("tensorrt") if importlib.util.find_spec("tensorrt") else None
    before = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("tensorrt", "pycuda")}
    simulation = trtsim.install("10.13")
    import pycuda.autoinit  # noqa: F401
    import tensorrt

    assert hasattr(tensorrt, "Builder") and trtsim.active() == simulation
    assert simulation.version == "10.13.0.35" and simulation.api_version == "10.13"
    trtsim.uninstall()
    after = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("tensorrt", "pycuda")}
    assert after == before and trtsim.active() is None
    if stubs is not None:
        assert sys.modules["tensorrt"] is stubs and not hasattr(stubs, "Builder")  # tensorrt-stubs' namespace


def test_install_refuses_when_a_real_tensorrt_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trtsim, "real_tensorrt_present", lambda: True)
    with pytest.raises(RuntimeError, match="real TensorRT"):
        trtsim.install("10.3")
    assert trtsim.active() is None and "pycuda" not in sys.modules


def test_tensorrt_stubs_are_not_a_real_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    assert trtsim.real_tensorrt_present() is False  # this venv has tensorrt-stubs and no TensorRT
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(Builder=object))
    assert trtsim.real_tensorrt_present() is True  # an importable tensorrt with a Builder is real
    with pytest.raises(RuntimeError, match="real TensorRT"):
        trtsim.install("10.3")


def test_versions_by_short_or_full_name() -> None:
    assert trtsim.install("8.5.2.2").api_version == "8.5"
    trtsim.uninstall()
    with pytest.raises(ValueError, match="known versions"):
        trtsim.install("9.0")
    with trtsim.simulate("11.1", trtsim.ORIN) as simulation:
        assert trtsim.active() == simulation and simulation.gpu.dla_cores == 2
    assert trtsim.active() is None


def test_install_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.ENV_VERSION, raising=False)
    assert trtsim.install_from_env() is None
    monkeypatch.setenv(registry.ENV_VERSION, "10.3")
    monkeypatch.setenv(registry.ENV_GPU, "RTX 3060:8.6")
    simulation = trtsim.install_from_env()
    assert simulation is not None and simulation.gpu.compute_capability == "8.6"
    assert trtsim.install_from_env() is simulation  # idempotent
    trtsim.uninstall()
    monkeypatch.setenv(registry.ENV_GPU, "orin")
    assert trtsim.install_from_env().gpu == trtsim.ORIN  # type: ignore[union-attr]
    trtsim.uninstall()
    monkeypatch.setenv(registry.ENV_VERSION, "7.1")
    with pytest.raises(ValueError, match=r"8\.5"):
        trtsim.install_from_env()


def test_objects_of_an_uninstalled_simulation_refuse_to_work() -> None:
    trtsim.install("10.3")
    import tensorrt

    logger = tensorrt.Logger()
    trtsim.uninstall()
    with pytest.raises(RuntimeError, match="uninstalled"):
        tensorrt.Builder(logger)


def test_importing_the_simulator_imports_no_onnx() -> None:
    import subprocess

    heavy = "('onnx', 'onnxruntime', 'tensorrt', 'pycuda')"
    code = f"import sys, ghost_deploy.testing.trtsim; print(sorted(m for m in {heavy} if m in sys.modules))"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
