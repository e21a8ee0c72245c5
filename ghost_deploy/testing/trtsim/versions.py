"""The simulated TensorRT versions and GPUs, and the `Simulation` record of what is installed."""

from __future__ import annotations

import dataclasses
import re

# Short name -> simulated MAJOR.MINOR.PATCH.BUILD, the version a plan records and a runtime compares.
VERSIONS: dict[str, str] = {
    # tensorrt.md s7: "JP 5.1.4 has 8.5.2.2" (trt-api-8.5.json was read at the release/8.5 head, 8.5.3.1;
    # the Python API of 8.5.2 and 8.5.3 is the same branch).
    "8.5": "8.5.2.2",
    # trt-api-8.6.json `version.full` (include/NvInferVersion.h at release/8.6).
    "8.6": "8.6.1.5",
    # trt-api-10.3.json / trt-api-10.13.json `version.full`.
    "10.3": "10.3.0.26",
    "10.13": "10.13.0.35",
    # trt-api-11.1.json `version.full` (NvInferVersion.h at v11.1): the build number is the header's; an
    # official 11.1 wheel may carry another build, so for 11.1 the build number is a simulated choice.
    "11.1": "11.1.0.106",
}

# How many parts `tensorrt.__version__` has: trt-api-8.5.json says build.sh substitutes ${TRT_VERSION}
# (4 parts); from 8.6 on it substitutes ${TRT_MAJMINPATCH} ("8.6.1", "10.3.0"; 11.1 shows "11.1.0").
_PYTHON_VERSION_PARTS = {"8.5": 4}


@dataclasses.dataclass(frozen=True)
class SimulatedGPU:
    """The GPU the simulation pretends to have."""

    name: str
    compute_capability: str
    memory_mib: int
    jetson: bool = False
    dla_cores: int = 0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\d+\.\d+", self.compute_capability):
            raise ValueError(f"compute capability must look like '8.9', got {self.compute_capability!r}")
        if self.memory_mib < 1 or self.dla_cores < 0:
            raise ValueError(f"memory_mib must be >= 1 and dla_cores >= 0, got {self.memory_mib}, {self.dla_cores}")

    @property
    def cc(self) -> tuple[int, int]:
        """The compute capability as (major, minor)."""
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


DESKTOP_GPU = SimulatedGPU("Simulated GPU (trtsim)", "8.9", 24576)
ORIN = SimulatedGPU("Orin (trtsim)", "8.7", 30592, jetson=True, dla_cores=2)
# AGX Xavier (JetPack 5: TensorRT 8.5): Volta, compute capability 7.2, two DLA cores; no TF32 (s10)
XAVIER = SimulatedGPU("Xavier (trtsim)", "7.2", 31011, jetson=True, dla_cores=2)
NAMED_GPUS = {"orin": ORIN, "xavier": XAVIER}


@dataclasses.dataclass(frozen=True)
class Simulation:
    """What `install` put in place: the 4-part version, the API description's key and the GPU."""

    version: str
    api_version: str
    gpu: SimulatedGPU


def resolve_version(text: str) -> tuple[str, str]:
    """(4-part version, API key) for a short name ('10.3') or a full simulated version ('10.3.0.26')."""
    text = text.strip()
    if text in VERSIONS:
        return VERSIONS[text], text
    for key, full in VERSIONS.items():
        if text == full:
            return full, key
    known = ", ".join(f"{k} ({v})" for k, v in VERSIONS.items())
    raise ValueError(f"TensorRT {text!r} is not simulated; known versions: {known}")


def python_version(full: str, api_key: str) -> str:
    """What `tensorrt.__version__` reads on that version."""
    return ".".join(full.split(".")[: _PYTHON_VERSION_PARTS.get(api_key, 3)])


def version_tuple(text: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26)."""
    return tuple(int(p) for p in text.split("."))


def parse_gpu(text: str) -> SimulatedGPU:
    """A GPU from `NAME:CC` (e.g. 'RTX 3060:8.6') or the word 'orin' or 'xavier'; '' gives the desktop default
    (compute capability 8.9)."""
    text = text.strip()
    if not text:
        return DESKTOP_GPU
    if text.lower() in NAMED_GPUS:
        return NAMED_GPUS[text.lower()]
    name, sep, cc = text.rpartition(":")
    if not sep or not name.strip():
        raise ValueError(f"a simulated GPU is NAME:CC (e.g. 'RTX 3060:8.6'), 'orin' or 'xavier', got {text!r}")
    return SimulatedGPU(name.strip(), cc.strip(), DESKTOP_GPU.memory_mib)
