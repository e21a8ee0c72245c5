"""The simulated plan (engine) file format; readable without installing anything.

    offset  size  field
    0       12    magic b"TRTSIM-PLAN\\0" (a real TensorRT plan never starts like this)
    12      4     format version (uint32 little endian), currently 1
    16      4     header length H (uint32 LE)
    20      H     header: UTF-8 JSON (see `build.plan_header_dict`): simulated version, GPU, flags, typing,
                  compatibility modes, DLA core, profiles, I/O tensors, layers
    20+H    8     ONNX length N (uint64 LE)
    28+H    N     the ONNX model the engine runs (precision already applied)
    28+H+N  4     CRC-32 of every byte before it (uint32 LE)

The product uses `is_simulated_plan` / `plan_header` to refuse a simulated engine outside a simulation.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any

MAGIC = b"TRTSIM-PLAN\x00"
FORMAT = 1
_HEAD = struct.Struct("<II")
_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")


class PlanError(ValueError):
    """Bytes that are not a usable simulated plan; `kind` is 'not-a-plan', 'truncated' or 'corrupt'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode_plan(header: dict[str, Any], onnx_bytes: bytes) -> bytes:
    """A plan file from its header and the ONNX it runs."""
    head = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + _HEAD.pack(FORMAT, len(head)) + head + _LEN.pack(len(onnx_bytes)) + onnx_bytes
    return body + _CRC.pack(zlib.crc32(body))


def decode_plan(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, ONNX bytes) of a plan; PlanError says why the bytes are not one."""
    if not data.startswith(MAGIC):
        raise PlanError("not-a-plan", "the bytes do not start with the simulated plan's magic tag")
    pos = len(MAGIC) + _HEAD.size
    if len(data) < pos:
        raise PlanError("truncated", f"the plan is truncated ({len(data)} bytes)")
    version, head_len = _HEAD.unpack_from(data, len(MAGIC))
    if version != FORMAT:
        raise PlanError("corrupt", f"plan format {version} is not {FORMAT}")
    onnx_at = pos + head_len + _LEN.size
    if len(data) < onnx_at:
        raise PlanError("truncated", f"the plan is truncated ({len(data)} bytes, header needs {onnx_at})")
    (onnx_len,) = _LEN.unpack_from(data, pos + head_len)
    end = onnx_at + onnx_len
    if len(data) < end + _CRC.size:
        raise PlanError("truncated", f"the plan is truncated ({len(data)} of {end + _CRC.size} bytes)")
    if len(data) > end + _CRC.size:
        raise PlanError("corrupt", f"{len(data) - end - _CRC.size} unexpected bytes after the plan")
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(data[:end]):
        raise PlanError("corrupt", "the plan's checksum does not match its contents")
    try:
        header = json.loads(data[pos : pos + head_len].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError("corrupt", f"unreadable plan header: {exc}") from None
    return header, data[onnx_at:end]


def plan_header(data: bytes) -> dict[str, Any] | None:
    """The header of a complete, intact simulated plan; None for anything else."""
    try:
        return decode_plan(bytes(data))[0]
    except PlanError:
        return None


def is_simulated_plan(path_or_bytes: bytes | bytearray | memoryview | str | os.PathLike[str]) -> bool:
    """Whether a file or bytes start like a simulated plan (True even for a damaged one)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes[: len(MAGIC)]) == MAGIC
    try:
        with open(path_or_bytes, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
