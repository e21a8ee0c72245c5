"""Implicit INT8 calibration, driven as TensorRT drives a Python IInt8 calibrator (tensorrt.md s2, s3, s9).

s9: "A Python IInt8*Calibrator is asked read_calibration_cache() first; get_batch() is called only when the
cache is missing or rejected (the header's algorithm must match the calibrator class)."
"""

from __future__ import annotations

import math
import operator
import re
import struct
from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim.device import DeviceAccessError
from ghost_deploy.testing.trtsim.sim import Sim
from ghost_deploy.testing.trtsim.trt_basic import TrampolineState
from ghost_deploy.testing.trtsim.trt_network import NetworkState

# The cache header's suffix names the algorithm (s3); one per calibrator class (s2 lists the classes).
ALGORITHMS = {
    "IInt8EntropyCalibrator2": "EntropyCalibration2",
    "IInt8EntropyCalibrator": "EntropyCalibration",
    "IInt8MinMaxCalibrator": "MinMaxCalibration",
    "IInt8LegacyCalibrator": "LegacyCalibration",
}
_ALGO_TYPES = {
    "ENTROPY_CALIBRATION_2": "IInt8EntropyCalibrator2",
    "ENTROPY_CALIBRATION": "IInt8EntropyCalibrator",
    "MINMAX_CALIBRATION": "IInt8MinMaxCalibrator",
    "LEGACY_CALIBRATION": "IInt8LegacyCalibrator",
}
NO_SCALES = (
    "Calibration failure occurred with no scaling factors detected. This could be due to no int8 calibrator or "
    "insufficient custom scales for network layers. Please see int8 sample to setup calibration correctly."
)


class CalibrationFailed(Exception):
    """The build fails with this message (logged as an error by the builder)."""


class CalibratorState(TrampolineState):
    """The IInt8 calibrator bases: every method is implemented by the Python subclass (pure virtual here)."""

    def get_batch_size(self) -> int:
        """Pure virtual."""
        raise self._pure("getBatchSize")

    def get_batch(self, names: Any) -> Any:
        """Pure virtual."""
        raise self._pure("getBatch")

    def read_calibration_cache(self) -> Any:
        """Pure virtual."""
        raise self._pure("readCalibrationCache")

    def write_calibration_cache(self, cache: Any) -> None:
        """Pure virtual."""
        raise self._pure("writeCalibrationCache")

    def get_algorithm(self) -> Any:
        """The CalibrationAlgoType of the concrete class (pure virtual on IInt8Calibrator)."""
        for member, cls_name in _ALGO_TYPES.items():
            if self._cpp == cls_name:
                return self._sim.member("CalibrationAlgoType", member)
        raise self._pure("getAlgorithm")


def cache_version(vt: tuple[int, ...]) -> int:
    """The header number (s3): 8.x major*1000+minor*100+patch; 10.x major*10000+minor*100+patch."""
    major, minor, patch = vt[:3]
    return major * 1000 + minor * 100 + patch if major < 10 else major * 10000 + minor * 100 + patch


def write_cache(vt: tuple[int, ...], algorithm: str, amax: dict[str, float]) -> bytes:
    """A cache in the s3 format: `TRT-<ver>-<Algo>` then `name: <IEEE-754 binary32 of amax/127, big endian>`."""
    lines = [f"TRT-{cache_version(vt)}-{algorithm}"]
    lines += [f"{name}: {struct.pack('>f', value / 127.0).hex()}" for name, value in amax.items()]
    return ("\n".join(lines) + "\n").encode("ascii")


def read_cache(data: bytes, algorithm: str) -> dict[str, float] | None:
    """The scales of a cache whose header names `algorithm`; None when missing or rejected (s2, s9)."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    header = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
    if header is None or header.group(2) != algorithm:
        return None
    scales = {}
    for line in lines[1:]:
        name, sep, hexa = line.rpartition(": ")
        if not line.strip():
            continue
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{1,8}", hexa.strip()):
            return None
        scales[name] = struct.unpack("!f", bytes.fromhex(hexa.strip().rjust(8, "0")))[0]
    return scales


def algorithm_of(sim: Sim, calibrator: Any) -> str:
    """The cache algorithm of a calibrator object, by its class (IInt8Calibrator: by get_algorithm())."""
    for cls_name, algorithm in ALGORITHMS.items():
        if cls_name in sim.classes and isinstance(calibrator, sim.classes[cls_name]):
            return algorithm
    member = calibrator.get_algorithm()
    return ALGORITHMS[_ALGO_TYPES[member.name]]


def _input_batch(sim: Sim, pointer: Any, shape: tuple[int, ...], dtype: np.dtype[Any], name: str) -> np.ndarray:
    try:
        address = operator.index(pointer)
    except TypeError:
        raise CalibrationFailed(f"get_batch must return device pointers (int), got {type(pointer).__name__}") from None
    nbytes = math.prod(shape) * dtype.itemsize
    ctx = sim.driver.runtime_context()
    try:
        data = sim.driver.read_in(ctx, address, nbytes)
    except DeviceAccessError as exc:
        raise CalibrationFailed(
            f"1: [calibrator] Error Code 1: Cuda Runtime (an illegal memory access was encountered) "
            f"reading calibration input {name} {shape}: {exc}"
        ) from None
    return np.frombuffer(data, dtype).reshape(shape)


def run_calibration(
    sim: Sim, calibrator: Any, network: NetworkState, shapes: dict[str, tuple[int, ...]]
) -> dict[str, float]:
    """Feed every batch of `get_batch` through the FP32 network; amax = max|x| of every float tensor."""
    from ghost_deploy.testing.trtsim import onnxexec

    names = [i.name for i in network.inputs]
    calibrator.get_batch_size()
    runner = onnxexec.AllTensors(network.model)
    amax: dict[str, float] = {}
    while True:
        pointers = calibrator.get_batch(names)
        if not pointers:
            break
        if len(pointers) != len(names):
            raise CalibrationFailed(f"get_batch returned {len(pointers)} pointers for {len(names)} inputs {names}")
        feeds = {
            n: _input_batch(sim, p, shapes[n], runner.input_dtype(n), n) for n, p in zip(names, pointers, strict=True)
        }
        for tensor, values in runner.run(feeds).items():
            amax[tensor] = max(amax.get(tensor, 0.0), float(np.abs(values).max(initial=0.0)))
    if not amax:
        raise CalibrationFailed(NO_SCALES)
    return amax


def calibrate(
    sim: Sim, calibrator: Any, network: NetworkState, shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, float], str]:
    """(scales, where they came from): the calibrator's cache if accepted, else batches (then the cache is written)."""
    algorithm = algorithm_of(sim, calibrator)
    cached = calibrator.read_calibration_cache()
    if cached is not None and len(cached):
        scales = read_cache(bytes(cached), algorithm)
        if scales is not None:
            return scales, "cache"
    cache = write_cache(sim.vt, algorithm, run_calibration(sim, calibrator, network, shapes))
    calibrator.write_calibration_cache(cache)
    scales = read_cache(cache, algorithm)  # the float32 scales the cache holds: a rebuild from it is identical
    assert scales is not None
    return scales, "batches"
