"""Implicit INT8 calibration, driven as TensorRT drives a Python IInt8 calibrator (tensorrt.md s2, s3, s9, s12).

s9: "A Python IInt8*Calibrator is asked read_calibration_cache() first; get_batch() is called only when the
cache is missing or rejected (the header's algorithm must match the calibrator class)."

s12, the trampoline (python/src/infer/pyInt8.cpp, `pyCalibratorTrampoline`): every call into Python is wrapped
in `try { ... } catch (std::exception const& e) { std::cerr << "[ERROR] Exception caught in get_batch(): "
<< e.what(); }`, so an exception never reaches the builder: get_batch's ends the data, read_calibration_cache's
means no cache, get_batch_size's gives -1, get_algorithm's gives CalibrationAlgoType(0). The cache TensorRT
writes reaches `write_calibration_cache` as a read-only `memoryview` of TensorRT's own buffer
(`py::memoryview::from_buffer`), valid for the duration of the call only.
"""

from __future__ import annotations

import math
import operator
import re
import struct
import sys
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


def read_cache(data: bytes, algorithm: str, version: int) -> dict[str, float] | None:
    """The scales of a cache whose header names `algorithm` and this TensorRT's `version` number; None when it
    is missing or rejected (s2, s9). A header of another version is skipped as incompatible ("trt will skip the
    file if it is incompatible", NVIDIA/TensorRT#1378); TensorRT's own check is not public, so the stricter
    reading is taken: the number must be this version's exactly (8.5.2 writes TRT-8502, 10.3.0 TRT-100300)."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    header = re.fullmatch(r"TRT-(\d+)-(\w+)", lines[0].strip()) if lines else None
    if header is None or header.group(2) != algorithm or int(header.group(1)) != version:
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


def _caught(method: str, exc: BaseException) -> None:
    """What pyInt8.cpp prints for an exception out of a Python override (pybind11's what(): 'Type: message').
    pybind11 turns every Python exception into error_already_set, KeyboardInterrupt included."""
    print(f"[ERROR] Exception caught in {method}(): {type(exc).__name__}: {exc}", file=sys.stderr)


def trampoline_get_batch(calibrator: Any, names: list[str]) -> list[int] | None:
    """get_batch through the trampoline: None/empty ends the data; so does anything that is no list of
    device pointers (pybind11's cast to std::vector<size_t> throws) and any exception."""
    try:
        result = calibrator.get_batch(names)
        if result is None:
            return None
        if isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
            raise TypeError(f"Unable to cast Python instance of type {type(result)} to C++ type 'std::vector<size_t>'")
        pointers = []
        for item in result:
            value = operator.index(item)  # TypeError for a float or an object without __index__
            if value < 0:
                raise TypeError(f"Unable to cast {value} to C++ type 'size_t'")
            pointers.append(value)
        return pointers or None
    except BaseException as exc:
        _caught("get_batch", exc)
        return None


def trampoline_read_cache(calibrator: Any) -> bytes | None:
    """read_calibration_cache through the trampoline: None, an exception, or an object without the buffer
    protocol (py::buffer{obj} throws) all mean no cache."""
    try:
        raw = calibrator.read_calibration_cache()
        if raw is None:
            return None
        if isinstance(raw, str):
            raise TypeError("Object of type 'str' is not an instance of 'buffer'")
        try:
            return memoryview(raw).tobytes()
        except TypeError:
            raise TypeError(f"Object of type '{type(raw).__name__}' is not an instance of 'buffer'") from None
    except BaseException as exc:
        _caught("read_calibration_cache", exc)
        return None


def trampoline_write_cache(calibrator: Any, cache: bytes) -> None:
    """write_calibration_cache through the trampoline: a read-only memoryview of TensorRT's buffer, valid during
    the call. After it the buffer is freed on TensorRT; here it is filled with 0xDD (a freed-memory pattern)
    and the view released, so a view kept for later raises and an array made on it reads garbage."""
    buffer = bytearray(cache)
    base = memoryview(buffer)
    view = base.toreadonly()
    try:
        calibrator.write_calibration_cache(view)
    except BaseException as exc:
        _caught("write_calibration_cache", exc)
    base[:] = b"\xdd" * len(buffer)
    try:
        view.release()
        base.release()
    except BufferError:  # a buffer export of the view is still held: it points into TensorRT's freed memory
        raise CalibrationFailed(
            "write_calibration_cache kept a buffer exported from the memoryview it was given: TensorRT frees that "
            "memory when the call returns; copy the bytes (bytes(cache) or cache.tobytes()) instead"
        ) from None


def _batch_size(calibrator: Any) -> int:
    try:
        return int(calibrator.get_batch_size())
    except BaseException as exc:
        _caught("get_batch_size", exc)
        return -1


def algorithm_of(sim: Sim, calibrator: Any) -> str:
    """The cache algorithm of a calibrator object, by its class (IInt8Calibrator: by get_algorithm())."""
    for cls_name, algorithm in ALGORITHMS.items():
        if cls_name in sim.classes and isinstance(calibrator, sim.classes[cls_name]):
            return algorithm
    try:
        member = calibrator.get_algorithm()
        name = member.name
    except BaseException as exc:
        _caught("get_algorithm", exc)
        name = sim.enums["CalibrationAlgoType"](0).name
    return ALGORITHMS[_ALGO_TYPES[name]]


def _input_batch(sim: Sim, address: int, shape: tuple[int, ...], dtype: np.dtype[Any], name: str) -> np.ndarray:
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
    _batch_size(calibrator)  # 10.x ignores it (implicit batch is gone); asked all the same
    runner = onnxexec.AllTensors(network.model)
    amax: dict[str, float] = {}
    while True:
        pointers = trampoline_get_batch(calibrator, names)
        if not pointers:
            break
        if len(pointers) != len(names):  # TensorRT memcpy's len(names) pointers: fewer is undefined, refused here
            raise CalibrationFailed(f"get_batch returned {len(pointers)} pointers for {len(names)} inputs {names}")
        feeds = {
            n: _input_batch(sim, p, shapes[n], runner.input_dtype(n), n) for n, p in zip(names, pointers, strict=True)
        }
        for tensor, values in runner.run(feeds).items():
            if values.dtype.kind == "f":  # ranges are of float tensors; shapes and indices have none
                amax[tensor] = max(amax.get(tensor, 0.0), float(np.abs(values).max(initial=0.0)))
    if not amax:
        raise CalibrationFailed(NO_SCALES)
    return amax


def calibrate(
    sim: Sim, calibrator: Any, network: NetworkState, shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, float], str]:
    """(scales, where they came from): the calibrator's cache if accepted, else batches (then the cache is written)."""
    algorithm = algorithm_of(sim, calibrator)
    version = cache_version(sim.vt)
    cached = trampoline_read_cache(calibrator)
    if cached:
        scales = read_cache(cached, algorithm, version)
        if scales is not None:
            return scales, "cache"
    cache = write_cache(sim.vt, algorithm, run_calibration(sim, calibrator, network, shapes))
    trampoline_write_cache(calibrator, cache)
    scales = read_cache(cache, algorithm, version)  # the float32 scales the cache holds: a rebuild is identical
    assert scales is not None
    return scales, "batches"
