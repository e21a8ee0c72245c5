"""TensorRT calibration cache: the exact bytes TensorRT and trtexec read, and a strict reader."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ghost_deploy.backends.trt.calib_cache import (
    MAX_CACHE_BYTES,
    amax_from_scale,
    cache_scale,
    format_cache,
    parse_version,
    read_cache,
    version_int,
    write_cache,
)
from ghost_deploy.errors import InputError


@pytest.mark.parametrize(
    ("version", "number"),
    [("8.5.2", 8502), ("8.6.1", 8601), ("8.2.3", 8203), ("10.3.0", 100300), ("10.9.0", 100900),
     ("10.13.0.35", 101300), ("11.4.0", 110400), ("8.6", 8600)],
)  # fmt: skip
def test_header_version_numbers(version: str, number: int, tmp_path: Path) -> None:
    assert version_int(version) == number
    path = tmp_path / "calib.cache"
    write_cache(path, {"input": 1.0}, version)
    assert path.read_bytes().split(b"\n")[0] == f"TRT-{number}-EntropyCalibration2".encode()
    assert read_cache(path).version_int == number


def test_parse_version() -> None:
    assert parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version(" 8.5 ") == (8, 5, 0)
    with pytest.raises(InputError, match="'ten'"):
        parse_version("ten")
    with pytest.raises(InputError, match="does not fit"):
        version_int("8.10.0")  # 8.x headers have one digit for the minor version


def test_worked_example_from_a_real_cache(tmp_path: Path) -> None:
    # NVIDIA/TensorRT#2036: a TensorRT 8.2.3 cache for an input in [0, 1]
    path = tmp_path / "real.cache"
    path.write_bytes(b"TRT-8203-EntropyCalibration2\n167: 3c009976\n")
    cache = read_cache(path)
    assert (cache.version_int, cache.algorithm, cache.trt_version) == (8203, "EntropyCalibration2", "8.2.3")
    assert cache.scales["167"] == pytest.approx(0.007849, abs=5e-7)
    assert cache.amax()["167"] == pytest.approx(0.997, abs=1e-3)


def test_one_over_127_encodes_as_documented() -> None:
    assert format_cache({"x": 1.0}, "10.3.0") == b"TRT-100300-EntropyCalibration2\nx: 3c010204\n"


def test_bytes_match_the_struct_writer_and_trtexec_decoding() -> None:
    amax = {"input": 2.64, "/conv_stem/Conv_output_0": 17.25, "onnx::Conv_5": 1e-3}
    lines = format_cache(amax, "8.6.1").decode("ascii").splitlines()
    assert lines[1:] == [f"{name}: {struct.pack('>f', a / 127).hex()}" for name, a in amax.items()]
    for line, a in zip(lines[1:], amax.values(), strict=True):
        # trtexec: stoi(hex, 16) reinterpreted as a float32
        bits = np.array([int(line[line.rfind(":") + 2 :], 16)], dtype=np.uint32)
        assert float(bits.view(np.float32)[0]) == cache_scale(a)


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    amax = {f"/blocks.{i}/Conv_output_0": float(v) for i, v in enumerate(rng.lognormal(0.0, 3.0, 300))}
    amax["onnx::Conv_12"] = 0.5
    path = tmp_path / "model.cache"
    write_cache(path, amax, "10.3.0")
    cache = read_cache(path)
    assert list(cache.scales) == list(amax)
    for name, a in amax.items():
        assert struct.pack(">f", cache.scales[name]) == struct.pack(">f", cache_scale(a)), name
    # reading and writing again gives the same file
    again = tmp_path / "again.cache"
    write_cache(again, cache.amax(), "10.3.0")
    assert again.read_bytes() == path.read_bytes()


def test_cache_scale_rounds_once_to_float32() -> None:
    for a in (1.0, 0.997, 3.14159, 1e-3, 6.0e4):
        assert cache_scale(a) == struct.unpack(">f", struct.pack(">f", a / 127))[0]
        assert amax_from_scale(cache_scale(a)) == pytest.approx(a, rel=1e-7)
    # a tensor that was always zero: any scale is exact; amax 1.0, as ghost_deploy.precision.quantize uses
    assert cache_scale(0.0) == cache_scale(1e-45) == cache_scale(1.0)
    for bad in (float("nan"), float("inf"), -1.0, 1e300):
        with pytest.raises(InputError):
            cache_scale(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "empty"),
        (b"TRT-100300\ninput: 3c010204\n", "line 1: expected a header"),
        (b"TRT-x-EntropyCalibration2\n", "line 1: expected a header"),
        (b"TRT-100300-EntropyCalibration2\ninput: 3c010204\nconv 3c010204\n", "line 3: expected '<tensor name>: "),
        (b"TRT-100300-EntropyCalibration2\ninput: 3c0102zz\n", "line 2: expected .*got 'input: 3c0102zz'"),
        (b"TRT-100300-EntropyCalibration2\ninput: 3c01020\n", "line 2: expected"),
        (b"TRT-100300-EntropyCalibration2\ninput: 3c010204\n\n", "line 3: expected .*got ''"),
        (b"TRT-100300-EntropyCalibration2\ninput: 00000000\n", "line 2: .*positive finite"),
        (b"TRT-100300-EntropyCalibration2\ninput: bc010204\n", "line 2: .*positive finite"),
        (b"TRT-100300-EntropyCalibration2\ninput: 7fc00000\n", "line 2: .*positive finite"),
        (b"TRT-100300-EntropyCalibration2\na: 3c010204\na: 3c010204\n", "line 3: tensor 'a' appears twice"),
        (b"TRT-100300-EntropyCalibration2\n\xff: 3c010204\n", "not text"),
    ],
)
def test_malformed_caches_name_the_line(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "bad.cache"
    path.write_bytes(text)
    with pytest.raises(InputError, match=message) as info:
        read_cache(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_names_with_colons_and_a_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "c.cache"
    path.write_bytes(b"TRT-8502-EntropyCalibration2\nonnx::Conv_5: 3c010204")
    assert read_cache(path).scales == {"onnx::Conv_5": pytest.approx(1 / 127)}


def test_unwritable_names_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="multi-line"):
        format_cache({"a\nb": 1.0}, "10.3.0")
    with pytest.raises(InputError, match=r"calibration cache .*absent\.cache does not exist"):
        read_cache(tmp_path / "absent.cache")


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "model.cache"
    write_cache(path, {"input": 1.0}, "10.3.0")
    before = path.read_bytes()
    with pytest.raises(InputError):
        write_cache(path, {"input": 1.0, "x": float("nan")}, "10.3.0")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.cache"]


# Issue 22, item 4: the cache is read like every other input file, bounded; its numbers are bounded before int().


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "calib.cache"
    os.mkfifo(fifo)
    code = f"import pathlib, ghost_deploy.backends.trt.calib_cache as c; c.read_cache(pathlib.Path({str(fifo)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)  # blocked before
    assert "InputError" in proc.stderr and "is a FIFO, not a regular file" in proc.stderr


def test_a_huge_cache_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.cache"
    with path.open("wb") as fh:  # sparse: a valid start, then more than a cache can hold (a 3 GB file: MemoryError)
        fh.write(b"TRT-100300-EntropyCalibration2\ninput: 3c010204\n")
        fh.truncate(MAX_CACHE_BYTES + 1)
    with pytest.raises(InputError, match=f"larger than {MAX_CACHE_BYTES} bytes"):
        read_cache(path)


def test_a_header_of_5000_digits_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "digits.cache"
    path.write_bytes(b"TRT-" + b"1" * 5000 + b"-EntropyCalibration2\ninput: 3c010204\n")
    with pytest.raises(InputError, match="line 1: the version number in the header has 5000 digits"):
        read_cache(path)


def test_a_version_of_5000_digits_is_bad_input() -> None:
    with pytest.raises(InputError, match="longer than 4 digits") as caught:
        version_int("1" * 5000 + ".0")  # before: ValueError, Python's 4300-digit limit
    assert len(str(caught.value)) < 300  # the number is not repeated whole
