"""TensorRT calibration cache: write and read it without importing TensorRT.

The format (docs/reference/tensorrt.md section 3) is ASCII text, one line each, every line ending in `\\n`:

    TRT-<version number>-EntropyCalibration2
    <tensor name>: <8 hex digits>

The hex digits are the big-endian IEEE-754 float32 bit pattern of the scale, scale = amax / 127. trtexec
(`readScalesFromCalibrationCache`), ModelOpt's `import_scales_from_calib_cache` and TensorRT's own
calibrators read it this way. Tensor names are written as UTF-8, which is ASCII for every name an ONNX
exporter produces; TensorRT compares the bytes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import read_bytes_limited, write_bytes_atomic

ALGORITHM = "EntropyCalibration2"
# Below this a float32 scale is denormal or zero: a tensor that was zero on every image. Any positive scale
# represents it exactly; it is given amax 1.0, as ghost_deploy.precision.quantize does, so the cache and Q/DQ agree.
_TINY = float(np.finfo(np.float32).tiny)
_ZERO_RANGE_AMAX = 1.0
_HEADER = re.compile(r"TRT-(\d+)-([A-Za-z][A-Za-z0-9]*)")
_LINE = re.compile(r"(.+): ([0-9a-fA-F]{8})")  # greedy name: ONNX names such as 'onnx::Conv_5' hold colons
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?!\d)")
_EXPECTED_LINE = "'<tensor name>: <8 hex digits>'"
# A cache holds one short line per tensor: a few KB for GhostNet, about 1 MB for the largest networks. Read
# through the bounded regular-file reader, a FIFO is refused instead of waited on and /dev/zero is not a MemoryError.
MAX_CACHE_BYTES = 16 << 20
# TensorRT's header numbers have 4 to 6 digits (8502, 100300); version parts have at most 2. Bounded before
# int() sees them: Python refuses to convert more than 4300 digits (ValueError), and nothing that long is a version.
MAX_HEADER_DIGITS = 9
MAX_VERSION_PART_DIGITS = 4


@dataclasses.dataclass(frozen=True)
class CalibrationCache:
    """A parsed cache: the header's version number and algorithm, and the float32 scale of each tensor."""

    version_int: int
    algorithm: str
    scales: dict[str, float]

    @property
    def trt_version(self) -> str:
        """The TensorRT version the header names, as 'major.minor.patch'."""
        base = 10000 if self.version_int >= 100000 else 1000
        major, rest = divmod(self.version_int, base)
        return f"{major}.{rest // 100}.{rest % 100}"

    def amax(self) -> dict[str, float]:
        """The amax (127 x scale) of each tensor."""
        return {name: amax_from_scale(s) for name, s in self.scales.items()}


def parse_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) from a version such as '10.3.0', '8.6.1.6' or '10.13'; patch defaults to 0."""
    match = _VERSION.match(version.strip())
    if match is None:
        raise InputError(
            f"TensorRT version {_show(version)} is not a version number; give MAJOR.MINOR[.PATCH] such as 10.3.0"
        )
    parts = (match[1], match[2], match[3] or "0")
    if max(len(part) for part in parts) > MAX_VERSION_PART_DIGITS:
        raise InputError(
            f"TensorRT version {_show(version)} has a part longer than {MAX_VERSION_PART_DIGITS} digits; give "
            "MAJOR.MINOR[.PATCH] such as 10.3.0"
        )
    major, minor, patch = (int(part) for part in parts)
    return major, minor, patch


def version_int(version: str) -> int:
    """The number in a cache header: major*1000+minor*100+patch before 10, major*10000+minor*100+patch since.

    8.5.2 -> 8502, 8.6.1 -> 8601, 10.3.0 -> 100300, 11.4.0 -> 110400 (NV_TENSORRT_VERSION of each release).
    """
    major, minor, patch = parse_version(version)
    minor_limit = 9 if major < 10 else 99
    if minor > minor_limit or patch > 99:
        raise InputError(
            f"TensorRT version {_show(version)} does not fit a cache header (minor <= {minor_limit}, patch <= 99 "
            f"for TensorRT {major}); give the version of the TensorRT that will read the cache"
        )
    return (major * 1000 if major < 10 else major * 10000) + minor * 100 + patch


def cache_scale(amax: float) -> float:
    """The scale the cache stores for `amax`: amax/127 in float64, rounded once to float32 (nearest even).

    This is what `struct.pack('>f', amax / 127)` writes; a Q/DQ scale made with this function matches the
    cache bit for bit. An amax too small for a normal float32 scale (a tensor that was always zero) is taken
    as 1.0, giving 1/127.
    """
    if not math.isfinite(amax) or amax < 0:
        raise InputError(f"amax {amax} is not a finite non-negative number; recalibrate on finite activations")
    with np.errstate(over="ignore"):
        scale = float(np.float32(amax / 127.0))
    if not math.isfinite(scale):
        raise InputError(f"amax {amax} overflows a float32 scale; the activation range is not usable for INT8")
    return cache_scale(_ZERO_RANGE_AMAX) if scale < _TINY else scale


def amax_from_scale(scale: float) -> float:
    """The amax a cache scale stands for (127 x scale, in float64)."""
    return float(scale) * 127.0


def format_cache(amax: Mapping[str, float], trt_version: str, algorithm: str = ALGORITHM) -> bytes:
    """The bytes of a calibration cache for `amax` (tensor name -> amax), in the mapping's order."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", algorithm):
        raise InputError(f"calibration algorithm {algorithm!r} is not a single word such as {ALGORITHM}")
    lines = [f"TRT-{version_int(trt_version)}-{algorithm}\n"]
    for name, value in amax.items():
        if not name or "\n" in name or "\r" in name:
            raise InputError(f"tensor name {name!r} cannot be written to a calibration cache (empty or multi-line)")
        lines.append(f"{name}: {struct.pack('>f', cache_scale(value)).hex()}\n")
    return "".join(lines).encode("utf-8")


def write_cache(path: Path, amax: Mapping[str, float], trt_version: str, algorithm: str = ALGORITHM) -> None:
    """Write a TensorRT calibration cache atomically (see `format_cache`)."""
    write_bytes_atomic(path, format_cache(amax, trt_version, algorithm))


def parse_cache(data: bytes, source: str = "calibration cache") -> CalibrationCache:
    """Parse the bytes of a calibration cache strictly; `source` names it in error messages."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: byte {exc.start} is not text; expected a TensorRT calibration cache") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise InputError(f"{source} is empty; expected a TensorRT calibration cache, regenerate it")
    header = _HEADER.fullmatch(lines[0])
    if header is None:
        raise InputError(
            f"{source}: line 1: expected a header 'TRT-<version number>-<algorithm>' such as "
            f"'TRT-100300-{ALGORITHM}', got {_show(lines[0])}; is this a TensorRT calibration cache?"
        )
    if len(header[1]) > MAX_HEADER_DIGITS:
        raise InputError(
            f"{source}: line 1: the version number in the header has {len(header[1])} digits (TensorRT writes "
            f"at most {MAX_HEADER_DIGITS}, e.g. TRT-100300-{ALGORITHM}); is this a TensorRT calibration cache?"
        )
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, scale = _parse_line(line, number, source)
        if name in scales:
            raise InputError(f"{source}: line {number}: tensor {name!r} appears twice; regenerate the cache")
        scales[name] = scale
    return CalibrationCache(int(header[1]), header[2], scales)


def check_cache_for(cache: CalibrationCache, trt_version: str, source: str) -> None:
    """Raise InputError unless TensorRT `trt_version` will take `cache`: its header must name that very
    version (TensorRT skips a cache of another version and asks the calibrator for images instead,
    NVIDIA/TensorRT#1378; docs/reference/tensorrt.md s12) and EntropyCalibration2 (s9)."""
    if cache.algorithm != ALGORITHM:
        raise InputError(
            f"{source} was written for {cache.algorithm}; the build's calibrator is IInt8EntropyCalibrator2, "
            f"which TensorRT gives only {ALGORITHM} caches (tensorrt.md s9): regenerate the cache with "
            "ghost-export --target onnx-int8"
        )
    wanted = version_int(trt_version)
    if cache.version_int != wanted:
        here = ".".join(str(p) for p in parse_version(trt_version))
        raise InputError(
            f"{source} was written for TensorRT {cache.trt_version} "
            f"(header TRT-{cache.version_int}-{cache.algorithm}); "
            f"TensorRT {here} skips a calibration cache of another version and would calibrate on images, which "
            f"this build does not take: make the cache for TensorRT {here} with `ghost-export MODEL --target "
            f"onnx-int8 --trt-version {here}` (the scales stay the same; only the header names the version)"
        )


def read_cache(path: Path) -> CalibrationCache:
    """Read and strictly parse a TensorRT calibration cache file: a regular file of at most MAX_CACHE_BYTES."""
    try:
        data = read_bytes_limited(path, MAX_CACHE_BYTES, "calibration cache")
    except OSError as exc:
        raise InputError(f"cannot read calibration cache {path}: {exc.strerror or exc}; check the path") from None
    return parse_cache(data, str(path))


def _parse_line(line: str, number: int, source: str) -> tuple[str, float]:
    match = _LINE.fullmatch(line)
    if match is None:
        raise InputError(f"{source}: line {number}: expected {_EXPECTED_LINE}, got {_show(line)}")
    (scale,) = struct.unpack(">f", bytes.fromhex(match[2]))
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(
            f"{source}: line {number}: the scale of {match[1]!r} is {scale}, expected a positive finite number; "
            "regenerate the cache"
        )
    return match[1], float(scale)


def _show(line: str, limit: int = 80) -> str:
    """A line quoted for a one-line error message, shortened when long."""
    return repr(line if len(line) <= limit else line[:limit] + "...")
