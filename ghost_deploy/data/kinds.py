"""What a file is, from its first bytes: for messages that say what was received when it is not what was
expected (an ONNX model given as a bundle, a text file given as an image). Reads at most HEAD bytes."""

from __future__ import annotations

from pathlib import Path

HEAD = 64

# (magic at offset 0, what a file starting so is); the image formats are those PIL opens here
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint or an .npz?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"%PDF", "a PDF document"),
)
MODEL_SUFFIXES = {".onnx": "an ONNX model", ".engine": "a TensorRT engine", ".plan": "a TensorRT engine"}


def describe(path: Path) -> str:
    """'an ONNX model', 'a text file (starts with "label,x")', 'an empty file', ...: what `path` holds."""
    try:
        if path.is_dir():
            return "a directory"
        with path.open("rb") as fh:
            head = fh.read(HEAD)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return describe_bytes(head, path.suffix.lower())


def describe_bytes(head: bytes, suffix: str = "") -> str:
    """What a file whose first bytes are `head` (and whose name ends in `suffix`) holds."""
    if not head:
        return "an empty file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if suffix == ".onnx" and head[0] == 0x08:  # protobuf field 1 (ir_version), as every ModelProto starts
        return "an ONNX model"
    if suffix in MODEL_SUFFIXES and suffix != ".onnx":
        return MODEL_SUFFIXES[suffix]
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle (a legacy PyTorch checkpoint?)"
    text = _text(head)
    if text is not None:
        return f"a text file (it starts with {text!r})"
    return f"binary data of an unknown kind (it starts with {head[:8]!r})"


def _text(head: bytes) -> str | None:
    """The first line of `head` when it reads as text, else None."""
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of HEAD is still text
        if exc.start < len(head) - 3:
            return None
        decoded = head[: exc.start].decode("utf-8")
    if any(not (c.isprintable() or c in "\t\r\n") for c in decoded):
        return None
    first = decoded.strip().splitlines()[0] if decoded.strip() else decoded
    return first[:40]
