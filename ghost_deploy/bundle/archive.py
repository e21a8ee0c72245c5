"""A bounded reader of bundle archives (.tar.gz): nothing an archive claims can make it allocate or recurse.

Python's `tarfile` reads a GNU long name or a PAX header of any declared size into memory (a 5.9 MB archive
took 4.2 GB), follows chained extension headers by recursion (3000 of them raise RecursionError), and stops
silently at a damaged header. This reader is iterative and bounds everything before reading it: an extension
header is at most MAX_EXTENSION_BYTES, at most MAX_CHAINED in a row, the regular members at most MAX_MEMBERS,
their total at most the caller's limit; a damaged header checksum or gzip CRC is a changed archive.

`scan` reads the whole archive once without writing anything: structure, names, sizes, sha256 of every
member, the manifest's bytes, and the gzip CRC at the end. `extract` reads it again and writes the members
the caller names, each hashed while written and stopped as soon as it exceeds its expected size.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from ghost_deploy.bundle.errors import (
    NotABundleError,
    TamperedFileError,
    TruncatedArchiveError,
    UnsafeMemberError,
    show,
)
from ghost_deploy.data.kinds import MODEL_SUFFIXES, describe
from ghost_deploy.fileio import create_new, write_error

BLOCK = 512
MAX_EXTENSION_BYTES = 64 << 10
MAX_CHAINED = 4
MAX_MEMBERS = 64
MAX_TRAILER_BYTES = 1 << 20
_REGULAR = (b"0", b"\0", b"7")
_LINKS = (b"1", b"2")
_DEVICES = (b"3", b"4", b"6")
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")


@dataclasses.dataclass
class Member:
    """A regular member as scanned: its name, size, and (after `scan`) sha256; `data` for the one kept."""

    name: str
    size: int
    sha256: str = ""
    data: bytes | None = None


@dataclasses.dataclass
class _Header:
    name: str
    size: int
    kind: bytes
    linkname: str


def _number(field: bytes) -> int:
    """A tar numeric field: octal text, or base-256 when the high bit of its first byte is set."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (256 ** (len(field) - 1)) if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text or b"0", 8)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _parse_header(block: bytes, archive: Path, offset: int) -> _Header:
    """One 512-byte header, its checksum verified: a changed byte is a changed archive, never 'end of archive'."""
    try:
        stored = _number(block[148:156])
        size = _number(block[124:136])
    except ValueError:
        stored, size = -1, 0
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != unsigned:
        raise TamperedFileError(
            f"{archive}: the tar header at byte {offset} is damaged (checksum); the archive was changed or is "
            "corrupt; get the bundle again"
        )
    if size < 0:
        raise UnsafeMemberError(f"{archive}: a member at byte {offset} declares a negative size")
    name = _text(block[0:100])
    if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
        name = _text(block[345:500]) + "/" + name
    return _Header(name, size, block[156:157], _text(block[157:257]))


class _Stream:
    """The decompressed archive read in blocks, with the position kept for messages."""

    def __init__(self, fh: IO[bytes] | gzip.GzipFile) -> None:
        self._fh = fh
        self.offset = 0

    def read(self, size: int) -> bytes:
        data = self._fh.read(size)
        self.offset += len(data)
        if len(data) != size:
            raise EOFError(f"ends at byte {self.offset}, inside a member")
        return data

    def chunks(self, size: int) -> Iterator[bytes]:
        """`size` bytes in chunks of at most 1 MiB, then the padding to the next block skipped."""
        left = size
        while left:
            chunk = self.read(min(left, 1 << 20))
            left -= len(chunk)
            yield chunk
        self.read(-size % BLOCK)

    def rest(self) -> int:
        """Read what follows the end-of-archive marker (zeros), bounded; returns its length."""
        data = self._fh.read(MAX_TRAILER_BYTES + 1)
        if len(data) > MAX_TRAILER_BYTES:
            raise UnsafeMemberError(f"more than {MAX_TRAILER_BYTES} bytes follow the end of the archive")
        return len(data)


def _entries(stream: _Stream, archive: Path) -> Iterator[tuple[_Header, int]]:
    """Every member header with the extension headers before it applied; (header, offset) in archive order."""
    pending: dict[str, str] = {}
    chained = 0
    while True:
        offset = stream.offset
        block = stream.read(BLOCK)
        if block == bytes(BLOCK):
            stream.rest()
            return
        header = _parse_header(block, archive, offset)
        if header.kind in (b"x", b"L", b"K"):
            chained += 1
            if chained > MAX_CHAINED or header.size > MAX_EXTENSION_BYTES:
                raise UnsafeMemberError(
                    f"{archive}: {chained} chained extension headers, the last of {header.size} bytes, at byte "
                    f"{offset} (a bundle needs at most {MAX_CHAINED} of {MAX_EXTENSION_BYTES} bytes); refusing it"
                )
            _extension(header, b"".join(stream.chunks(header.size)), pending, archive)
            continue
        if header.kind not in (*_REGULAR, *_LINKS, *_DEVICES, b"5"):
            raise UnsafeMemberError(
                f"{archive}: the entry at byte {offset} has tar type {header.kind!r}, which a bundle never holds; "
                "refusing the archive"
            )
        header.name = pending.pop("path", header.name)
        header.linkname = pending.pop("linkpath", header.linkname)
        if "size" in pending:
            header.size = _pax_size(pending.pop("size"), archive)
        pending, chained = {}, 0
        yield header, offset


def _extension(header: _Header, data: bytes, pending: dict[str, str], archive: Path) -> None:
    """Apply a GNU long name / long link or a PAX header to the next member."""
    if header.kind == b"L":
        pending["path"] = _text(data)
    elif header.kind == b"K":
        pending["linkpath"] = _text(data)
    else:
        pos = 0
        while match := _PAX_RECORD.match(data, pos):
            length = int(match.group(1))
            if length <= 0 or pos + length > len(data):
                raise TamperedFileError(f"{archive}: a PAX header is malformed; the archive was changed or is corrupt")
            key = match.group(2).decode("utf-8", "replace")
            value = data[match.end() : pos + length - 1].decode("utf-8", "replace")
            if key.startswith("GNU.sparse"):
                raise UnsafeMemberError(f"{archive}: a sparse member, which a bundle never holds; refusing it")
            if key in ("path", "linkpath", "size"):
                pending[key] = value
            pos += length


def _pax_size(value: str, archive: Path) -> int:
    if not value.isdigit() or len(value) > 20:
        raise UnsafeMemberError(f"{archive}: a PAX size {show(value)} is not a size; refusing the archive")
    return int(value)


def member_name(header_name: str, kind: bytes, linkname: str) -> str:
    """The member's file name, refusing anything that is not a plain file at the top of the archive."""
    path = PurePosixPath(header_name)
    name = show(header_name)
    if header_name.startswith(("/", "\\")) or path.is_absolute() or (len(header_name) > 1 and header_name[1] == ":"):
        raise UnsafeMemberError(f"archive member {name} has an absolute path; refusing the archive")
    if ".." in path.parts or "\\" in header_name:
        raise UnsafeMemberError(f"archive member {name} climbs out of the destination with '..'; refusing it")
    if kind in _LINKS:
        raise UnsafeMemberError(f"archive member {name} is a link (to {show(linkname)}); refusing the archive")
    if kind in _DEVICES:
        raise UnsafeMemberError(f"archive member {name} is a device or FIFO; refusing the archive")
    parts = [p for p in path.parts if p != "."]
    if kind not in _REGULAR or len(parts) != 1:
        raise UnsafeMemberError(f"archive member {name} is not a plain file at the top of the archive; refusing it")
    return parts[0]


def _read(archive: Path, visit: Callable[[_Stream, str, int], None]) -> None:
    """Walk the archive's regular members, calling `visit(stream, name, size)`, which must consume the data."""
    try:
        with archive.open("rb") as raw, gzip.GzipFile(fileobj=raw) as fh:
            stream = _Stream(fh)
            for header, _offset in _entries(stream, archive):
                visit(stream, member_name(header.name, header.kind, header.linkname), header.size)
    except EOFError as exc:
        raise TruncatedArchiveError(f"{archive} is truncated ({exc}); get the bundle again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        if str(exc).startswith("Not a gzipped file"):
            raise NotABundleError(not_a_bundle(archive)) from None
        raise TamperedFileError(
            f"{archive} was changed or is corrupt ({str(exc)[:200]}); get the bundle again"
        ) from None
    except OSError as exc:
        raise NotABundleError(f"cannot read {archive}: {exc.strerror or exc}") from None


def not_a_bundle(path: Path) -> str:
    """What `path` is instead of a bundle, and what to do (pack an ONNX or engine; else give a bundle)."""
    what = describe(path)
    hint = "give a bundle directory or the .tar.gz that `ghost-deploy pack` (or `ghost-export --pack`) wrote"
    if what in MODEL_SUFFIXES.values():
        hint = f"pack it into one first: ghost-deploy pack {path} -o {path.stem}.tar.gz; then run the bundle"
    return f"{path} is not a bundle: it is {what}; {hint}"


def scan(archive: Path, max_bytes: int, keep: str, keep_limit: int) -> dict[str, Member]:
    """Every regular member's name, size and sha256, in one pass that writes nothing; `keep`'s bytes are kept.

    Refused before their data is read: more than MAX_MEMBERS members, a member named twice, a total declared
    size above `max_bytes`, and `keep` larger than `keep_limit`.
    """
    members: dict[str, Member] = {}
    total = 0

    def visit(stream: _Stream, name: str, size: int) -> None:
        nonlocal total
        if name in members:
            raise UnsafeMemberError(f"archive member {show(name)} appears twice; refusing the archive")
        if len(members) >= MAX_MEMBERS:
            raise UnsafeMemberError(f"the archive has more than {MAX_MEMBERS} members; this is not a bundle")
        total += size
        if total > max_bytes:
            raise UnsafeMemberError(f"the archive's members declare more than the limit of {max_bytes} bytes")
        if name == keep and size > keep_limit:
            raise UnsafeMemberError(f"{name} declares {size} bytes, more than {keep_limit}; refusing it")
        digest, kept = hashlib.sha256(), []
        for chunk in stream.chunks(size):
            digest.update(chunk)
            if name == keep:
                kept.append(chunk)
        members[name] = Member(name, size, digest.hexdigest(), b"".join(kept) if name == keep else None)

    _read(archive, visit)
    return members


def _write_all(out: IO[bytes], data: bytes, target: Path) -> None:
    """Write all of `data` to the unbuffered `out`; an OSError (no space, EFBIG) is the project's, naming `target`."""
    view = memoryview(data)
    try:
        while view:
            view = view[out.write(view) or 0 :]
    except OSError as exc:
        raise write_error(target, exc) from None


def write_member(dest: Path, name: str, data: bytes) -> None:
    """Write an extracted file `name` into `dest`: created new (never through a link), errors naming it."""
    target = dest / name
    try:
        out = os.fdopen(create_new(target, 0o644), "wb", buffering=0)
    except OSError as exc:
        raise write_error(target, exc) from None
    with out:
        _write_all(out, data, target)


def extract(archive: Path, dest: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Write the members named in `expected` (name -> size, sha256) into `dest`, each checked while written."""

    def visit(stream: _Stream, name: str, size: int) -> None:
        if name not in expected:
            for _chunk in stream.chunks(size):
                pass
            return
        want_size, want_sha = expected[name]
        if size != want_size:
            raise TamperedFileError(f"{name} has {size} bytes in the archive, the manifest says {want_size}")
        digest = hashlib.sha256()
        target = dest / name
        try:  # created new, never through a link; a write that fails is the destination's fault, not the archive's
            out = os.fdopen(create_new(target, 0o644), "wb", buffering=0)
        except OSError as exc:
            raise write_error(target, exc) from None
        with out:
            for chunk in stream.chunks(size):
                digest.update(chunk)
                _write_all(out, chunk, target)
        if digest.hexdigest() != want_sha:
            raise TamperedFileError(f"{name} changed while the archive was read (sha256); get the bundle again")

    _read(archive, visit)
