"""Installing a simulation: the one registry of what is installed, `sys.modules`, and an import hook.

`tensorrt`, `pycuda`, `pycuda.driver` and cuda-python's `cuda.bindings.driver` go into `sys.modules`;
`pycuda.autoinit` and `pycuda.autoprimaryctx` are made by a meta-path finder when imported, so that importing
them does the context work each time a fresh simulation is installed. Whatever was in `sys.modules` under
those names before (e.g. the empty `tensorrt` namespace package of tensorrt-stubs) is put back by `uninstall`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from ghost_deploy.testing.trtsim.apispec import load_api
from ghost_deploy.testing.trtsim.device import Driver
from ghost_deploy.testing.trtsim.sim import Sim, State
from ghost_deploy.testing.trtsim.versions import SimulatedGPU, Simulation, parse_gpu, resolve_version

REAL_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu11",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "tensorrt-cu11-bindings",
    "tensorrt-cu12-bindings",
    "tensorrt-cu13-bindings",
    "tensorrt-libs",
    "tensorrt-cu11-libs",
    "tensorrt-cu12-libs",
    "tensorrt-cu13-libs",
)
ENV_VERSION = "GHOST_DEPLOY_SIMULATE_TRT"
ENV_GPU = "GHOST_DEPLOY_SIMULATE_GPU"
_ROOTS = ("tensorrt", "pycuda", "cuda")
_PACKAGES = ("pycuda", "tensorrt", "cuda", "cuda.bindings")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the simulated modules; runs the import effect of pycuda.autoinit / autoprimaryctx."""

    def __init__(
        self, modules: dict[str, types.ModuleType], effects: dict[str, Callable[[types.ModuleType], None]]
    ) -> None:
        self._modules = modules
        self._effects = effects

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self._modules or fullname in self._effects:
            return importlib.util.spec_from_loader(fullname, self, is_package=fullname in _PACKAGES)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._modules.get(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        effect = self._effects.get(module.__name__)
        if effect is not None:
            effect(module)


@dataclasses.dataclass
class _Installed:
    simulation: Simulation
    sim: Sim
    finder: _Finder
    modules: dict[str, types.ModuleType]
    saved: dict[str, types.ModuleType]


class _Registry:
    """The one piece of global state: the simulation currently installed."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: _Installed | None = None


_REGISTRY = _Registry()


def _managed(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _ROOTS)


def real_tensorrt_present() -> bool:
    """A real TensorRT is installed: one of its distributions, or an importable `tensorrt` with a Builder.
    (tensorrt-stubs leaves an importable but empty `tensorrt` namespace package: that is not TensorRT.)"""
    for name in REAL_DISTRIBUTIONS:
        try:
            metadata.distribution(name)
            return True
        except metadata.PackageNotFoundError:
            pass
    with _REGISTRY.lock:
        installed = _REGISTRY.current
        module = installed.saved.get("tensorrt") if installed else sys.modules.get("tensorrt")
        if installed is not None or module is not None:
            return module is not None and hasattr(module, "Builder")
    spec = importlib.util.find_spec("tensorrt")
    if spec is None or spec.origin in (None, "namespace"):
        return False
    return hasattr(importlib.import_module("tensorrt"), "Builder")


def _package_check() -> bool:
    """`trtsim.real_tensorrt_present()` looked up on the package, so a test may monkeypatch it there."""
    package = sys.modules.get(__package__ or "")
    check = getattr(package, "real_tensorrt_present", real_tensorrt_present)
    return bool(check())


def _state_classes() -> dict[str, type[State]]:
    from ghost_deploy.testing.trtsim.calibration import CalibratorState
    from ghost_deploy.testing.trtsim.trt_basic import DimsState, ILoggerState, IProfilerState, LoggerState
    from ghost_deploy.testing.trtsim.trt_builder import BuilderState
    from ghost_deploy.testing.trtsim.trt_network import ParserState
    from ghost_deploy.testing.trtsim.trt_runtime import RuntimeState

    states: dict[str, type[State]] = {"ILogger": ILoggerState, "Logger": LoggerState, "IProfiler": IProfilerState}
    states.update({name: DimsState for name in ("Dims", "Dims2", "Dims3", "Dims4", "DimsHW")})
    states.update({"Builder": BuilderState, "OnnxParser": ParserState, "Runtime": RuntimeState})
    calibrators = ("IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator")
    states.update({name: CalibratorState for name in (*calibrators, "IInt8LegacyCalibrator")})
    return states


def _build(version: str, api_key: str, gpu: SimulatedGPU) -> tuple[Sim, dict[str, types.ModuleType], _Finder]:
    from ghost_deploy.testing.trtsim import pycuda_module
    from ghost_deploy.testing.trtsim.cuda_bindings import binding_major, build_cuda_bindings
    from ghost_deploy.testing.trtsim.surface import build_tensorrt
    from ghost_deploy.testing.trtsim.trt_basic import FUNCTIONS

    sim = Sim(load_api(api_key), version, gpu, Driver(gpu))
    trt = build_tensorrt(sim, _state_classes(), FUNCTIONS)
    package, driver = pycuda_module.build_pycuda(sim.driver)
    modules = {"tensorrt": trt, "pycuda": package, "pycuda.driver": driver}
    modules.update(build_cuda_bindings(sim.driver, binding_major(sim.vt)))
    effects: dict[str, Callable[[types.ModuleType], None]] = {
        "pycuda.autoinit": lambda m: pycuda_module.run_autoinit(m, driver),
        "pycuda.autoprimaryctx": lambda m: pycuda_module.run_autoprimaryctx(m, driver),
    }
    return sim, modules, _Finder(modules, effects)


def install(version: str, gpu: SimulatedGPU | None = None) -> Simulation:
    """Install simulated `tensorrt` (version '10.3' or '10.3.0.26') and `pycuda` modules; RuntimeError when a
    real TensorRT is present or another simulation is installed."""
    full, api_key = resolve_version(version)
    gpu = gpu or parse_gpu("")
    with _REGISTRY.lock:
        if _REGISTRY.current is not None:
            raise RuntimeError(f"a TensorRT simulation ({_REGISTRY.current.simulation.version}) is already installed")
        if _package_check():
            raise RuntimeError(
                "refusing to simulate TensorRT: a real TensorRT is installed here (a tensorrt distribution, or an "
                "importable `tensorrt` with a Builder); use it, or run where TensorRT is absent"
            )
        sim, modules, finder = _build(full, api_key, gpu)
        saved = {name: sys.modules.pop(name) for name in list(sys.modules) if _managed(name)}
        sys.modules.update(modules)
        sys.meta_path.insert(0, finder)
        simulation = Simulation(full, api_key, gpu)
        _REGISTRY.current = _Installed(simulation, sim, finder, modules, saved)
        return simulation


def uninstall() -> None:
    """Remove the simulated modules (restoring what was there), free all simulated device memory."""
    with _REGISTRY.lock:
        installed = _REGISTRY.current
        if installed is None:
            return
        installed.sim.alive = False
        installed.sim.driver.shutdown()
        for name in [n for n in sys.modules if _managed(n)]:
            del sys.modules[name]
        sys.modules.update(installed.saved)
        if installed.finder in sys.meta_path:
            sys.meta_path.remove(installed.finder)
        _REGISTRY.current = None


@contextlib.contextmanager
def simulate(version: str, gpu: SimulatedGPU | None = None) -> Iterator[Simulation]:
    """`with simulate('10.3'):` installs for the block and uninstalls after it."""
    simulation = install(version, gpu)
    try:
        yield simulation
    finally:
        uninstall()


def active() -> Simulation | None:
    """The installed simulation, or None."""
    with _REGISTRY.lock:
        return None if _REGISTRY.current is None else _REGISTRY.current.simulation


def install_from_env() -> Simulation | None:
    """Install the simulation GHOST_DEPLOY_SIMULATE_TRT names (GPU: GHOST_DEPLOY_SIMULATE_GPU, `NAME:CC` or `orin`);
    None when unset or empty. Idempotent when the same simulation is already installed."""
    text = os.environ.get(ENV_VERSION, "").strip()
    if not text:
        return None
    full, _key = resolve_version(text)
    gpu = parse_gpu(os.environ.get(ENV_GPU, ""))
    current = active()
    if current is not None and current.version == full and current.gpu == gpu:
        return current
    return install(full, gpu)


def current_sim() -> Sim:
    """The installed simulation's internals (RuntimeError when none is installed)."""
    with _REGISTRY.lock:
        if _REGISTRY.current is None:
            raise RuntimeError("no TensorRT simulation is installed")
        return _REGISTRY.current.sim
