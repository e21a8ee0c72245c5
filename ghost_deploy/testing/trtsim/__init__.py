"""A version-faithful simulator of the `tensorrt` and `pycuda` Python modules (DESIGN.md fact 3).

`install("10.3")` puts a `tensorrt` module with exactly TensorRT 10.3's Python API (generated from NVIDIA's
binding sources, `api/trt-api-10.3.json`) and a `pycuda` into `sys.modules`. Engines run their ONNX on ONNX
Runtime's CPU provider with the engine's precision made real; plans carry a header saying they are simulated
(`plan_header`, `is_simulated_plan`). Nothing runs at import; onnx and onnxruntime are imported when used.
"""

from __future__ import annotations

from typing import Any

from ghost_deploy.testing.trtsim.plan import is_simulated_plan, plan_header
from ghost_deploy.testing.trtsim.registry import (
    active,
    install,
    install_from_env,
    real_tensorrt_present,
    simulate,
    uninstall,
)
from ghost_deploy.testing.trtsim.versions import DESKTOP_GPU, ORIN, VERSIONS, XAVIER, SimulatedGPU, Simulation


def live_contexts() -> int:
    """How many CUDA contexts the simulated process holds (simulator-only)."""
    from ghost_deploy.testing.trtsim.registry import current_sim

    return current_sim().driver.live_contexts()


def device_bytes_in_use() -> int:
    """Simulated device memory currently allocated (simulator-only)."""
    from ghost_deploy.testing.trtsim.registry import current_sim

    return current_sim().driver.bytes_in_use()


def engine_dla_core(engine: Any) -> int | None:
    """The DLA core a simulated ICudaEngine runs on (None: the GPU). s9: `Runtime.DLA_core` must be set before
    deserializing an engine built for another core than 0; when it was not, the engine runs on core 0."""
    from ghost_deploy.testing.trtsim.sim import state_of

    core: int | None = state_of(engine).dla_core
    return core


__all__ = [
    "DESKTOP_GPU",
    "ORIN",
    "VERSIONS",
    "XAVIER",
    "SimulatedGPU",
    "Simulation",
    "active",
    "device_bytes_in_use",
    "engine_dla_core",
    "install",
    "install_from_env",
    "is_simulated_plan",
    "live_contexts",
    "plan_header",
    "real_tensorrt_present",
    "simulate",
    "uninstall",
]
