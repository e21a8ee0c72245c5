"""What this machine has, one function each: TensorRT (installed? which version?), GPUs, Jetson.

Every other module asks here. TensorRT is found by its package metadata, never by importing it: importing
loads CUDA libraries, and `tensorrt-stubs` (installed for mypy) leaves an importable but empty `tensorrt`
namespace. While the TensorRT simulator is active (`ghost_deploy.testing.trtsim`, switched on by a test
fixture or `GHOST_DEPLOY_SIMULATE_TRT`) the simulated TensorRT and GPU are reported instead; distribution
metadata is never faked.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions that carry TensorRT's Python bindings: the meta package first, then the CUDA-specific wheels
TRT_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
    "tensorrt-cu11-bindings",
)
# JetPack 6 ships TensorRT 10.3: what a plan or a cache is made for when no TensorRT is here or named
DEFAULT_TRT_VERSION = "10.3.0"
_CC = re.compile(r"\d+\.\d+")


@dataclasses.dataclass(frozen=True)
class GPU:
    """One GPU as nvidia-smi (or the simulator) describes it; `compute_capability` None when not reported."""

    name: str
    compute_capability: str | None
    driver: str
    memory: str
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def simulation() -> Any:
    """The active TensorRT simulation, or None; never imports the simulator (it is imported only on request)."""
    sim = sys.modules.get("ghost_deploy.testing.trtsim")
    return sim.active() if sim is not None else None


def simulate_from_env() -> str | None:
    """Switch the TensorRT simulator on when GHOST_DEPLOY_SIMULATE_TRT names a version; returns the line every
    command prints on standard error then (None when the variable is unset). Refused, as bad input, when the
    version is unknown or a real TensorRT is installed."""
    import os

    if not os.environ.get("GHOST_DEPLOY_SIMULATE_TRT", "").strip():
        return None
    from ghost_deploy.errors import InputError
    from ghost_deploy.testing import trtsim

    try:
        sim = trtsim.install_from_env()
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"GHOST_DEPLOY_SIMULATE_TRT: {exc}") from None
    if sim is None:
        return None
    return (
        f"TensorRT {sim.version} is SIMULATED (GHOST_DEPLOY_SIMULATE_TRT; GPU: {sim.gpu.name}, compute capability "
        f"{sim.gpu.compute_capability}): engines run on ONNX Runtime CPU, for tests only, and are marked simulated"
    )


def distribution_version(*names: str) -> str | None:
    """The version of the first installed distribution among `names`, else None."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def tensorrt_version() -> str | None:
    """The version of TensorRT's Python bindings here (simulated while the simulator is active), else None."""
    sim = simulation()
    if sim is not None:
        return str(sim.version)
    return distribution_version(*TRT_DISTRIBUTIONS)


def tensorrt_installed() -> bool:
    """True when TensorRT's Python bindings are installed (or simulated)."""
    return tensorrt_version() is not None


def trt_version_for_plan(requested: str | None) -> tuple[str, str]:
    """The TensorRT version to plan or write a cache for, and where it came from: the request, the installed
    (or simulated) TensorRT, else DEFAULT_TRT_VERSION (JetPack 6)."""
    if requested:
        return requested, "--trt-version"
    here = tensorrt_version()
    if here is not None:
        return here, "simulated" if simulation() is not None else "installed"
    return DEFAULT_TRT_VERSION, "default (JetPack 6)"


def compute_capability(text: str) -> str | None:
    """'8.7' from nvidia-smi's compute_cap field; None for '[N/A]' and anything else that is not one."""
    text = text.strip()
    return text if _CC.fullmatch(text) else None


def gpus() -> list[GPU]:
    """GPUs from nvidia-smi (or the simulated GPU), empty when there is none."""
    sim = simulation()
    if sim is not None:
        gpu = sim.gpu
        return [GPU(gpu.name, gpu.compute_capability, "simulated", f"{gpu.memory_mib} MiB", simulated=True)]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            found.append(GPU(parts[0], compute_capability(parts[1]), parts[2], parts[3]))
    return found


def jetson() -> dict[str, str] | None:
    """The L4T release and board model on a Jetson (simulated: the simulated GPU says so), else None."""
    sim = simulation()
    if sim is not None:
        return {"l4t": "simulated", "model": sim.gpu.name} if sim.gpu.jetson else None
    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return None
    info = {"l4t": release.read_text(errors="replace").splitlines()[0].strip()}
    model = Path("/proc/device-tree/model")
    if model.is_file():
        info["model"] = model.read_text(errors="replace").strip("\x00\n ")
    return info
