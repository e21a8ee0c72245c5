"""Preprocessed inputs from .npy / .npz files, streamed: memory holds one row, whatever the file declares.

An .npy is memory-mapped; an .npz is read member by member, each member row by row from its (possibly
compressed) stream. Only the headers are trusted for shapes, and a header is checked before any row is read;
a stream that ends before its header's promise is refused as truncated.

numpy warns, in two lines each time a header is read, about headers it had to repair (a file saved by Python 2):
the warning is said once per file, in one line, and the file is still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ghost_deploy.data.inputs import Sample
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import open_regular
from ghost_deploy.report import print_line


@dataclasses.dataclass(frozen=True)
class _Member:
    """One array of the file: its .npz member name (None for an .npy), rows and dtype."""

    name: str | None
    rows: int
    dtype: np.dtype[Any]
    fortran: bool


@dataclasses.dataclass
class ArrayFile:
    """Preprocessed inputs from an .npy (N x 3 x S x S) or .npz (every array, in order), as float32 rows.

    `limit` picks a seeded subset of rows. Construction reads every used row once (to check it is finite and
    to hash it), one row at a time.
    """

    path: Path
    shape: tuple[int, int, int]
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        with open_regular(self.path, "array file"):  # a FIFO or a device is refused before numpy opens it
            pass
        self._members = self._read_headers()
        total = sum(m.rows for m in self._members)
        if total == 0:
            raise InputError(f"{self.path} holds no rows; give N x {' x '.join(map(str, self.shape))} arrays")
        if self.limit is not None and total > self.limit:
            chosen = np.sort(np.random.default_rng(self.seed).choice(total, self.limit, replace=False))
            self._chosen: set[int] | None = {int(i) for i in chosen}
        else:
            self._chosen = None
        self._count = total if self._chosen is None else len(self._chosen)
        self._digest = self._check_rows()

    def _read_headers(self) -> list[_Member]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            members = self._headers()
        for text in dict.fromkeys(_one_line(str(w.message)) for w in caught):
            print_line(f"warning: {self.path}: {text}", sys.stderr)
        return members

    def _headers(self) -> list[_Member]:
        try:
            if self.path.suffix.lower() == ".npz":
                with zipfile.ZipFile(self.path) as zf:
                    members = []
                    for name in zf.namelist():
                        with zf.open(name) as fh:
                            members.append(self._member(name, *_header(fh)))
                    return members
            with self.path.open("rb") as fh:
                return [self._member(None, *_header(fh))]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            raise InputError(f"cannot read {self.path} as .npy/.npz: {_one_line(str(exc))[:200]}") from None

    def _member(self, name: str | None, shape: tuple[int, ...], fortran: bool, dtype: np.dtype[Any]) -> _Member:
        where = f"{self.path}" + (f" (member {name[:80]})" if name else "")
        if len(shape) != 4 or tuple(shape[1:]) != self.shape or dtype.kind != "f":
            raise InputError(
                f"{where} holds an array of shape {shape} and dtype {dtype}; expected float "
                f"N x {' x '.join(map(str, self.shape))} (preprocessed, NCHW)"
            )
        if fortran and name is not None:
            raise InputError(f"{where} is stored in Fortran order; save it with np.savez(np.ascontiguousarray(x))")
        return _Member(name, int(shape[0]), dtype, fortran)

    def _check_rows(self) -> str:
        digest = hashlib.sha256()
        for index, row in self._rows():
            if not np.isfinite(row).all():
                raise InputError(f"{self.path} row {index} contains NaN or Inf values; calibration data must be finite")
            digest.update(row.tobytes())
        return digest.hexdigest()

    def _rows(self) -> Iterator[tuple[int, np.ndarray]]:
        """(global row index, float32 row) of every used row, in file order, one row in memory at a time."""
        start = 0
        try:
            for member in self._members:
                wanted = self._wanted(start, member.rows)
                if wanted:
                    for offset, row in _member_rows(self.path, member, self.shape, wanted):
                        yield start + offset, row
                start += member.rows
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read {self.path}: {_one_line(str(exc))[:200]}") from None

    def _wanted(self, start: int, rows: int) -> list[int]:
        if self._chosen is None:
            return list(range(rows))
        return [i - start for i in sorted(self._chosen) if start <= i < start + rows]

    def digest(self) -> str:
        """sha256 of the float32 rows used."""
        return self._digest

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Sample]:
        for index, row in self._rows():
            yield Sample(row, None, f"{self.path.name}[{index}]")


def _one_line(text: str) -> str:
    """`text` with every run of whitespace, newlines included, as one space."""
    return " ".join(text.split())


def _header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype from an .npy header (bounded by numpy's header size limit)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unknown .npy format version {version}")
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


def _member_rows(
    path: Path, member: _Member, chw: tuple[int, int, int], wanted: list[int]
) -> Iterator[tuple[int, np.ndarray]]:
    """The wanted rows of one array: memory-mapped for an .npy, streamed for an .npz member."""
    if member.name is None:
        with warnings.catch_warnings():  # said once, in one line, when the header was first read
            warnings.simplefilter("ignore")
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        for i in wanted:
            yield i, np.array(mapped[i], dtype=np.float32)
        return
    row_bytes = math.prod(chw) * member.dtype.itemsize
    targets = set(wanted)
    with zipfile.ZipFile(path) as zf, zf.open(member.name) as fh:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _header(fh)
        for i in range(max(wanted) + 1):
            data = fh.read(row_bytes)
            if len(data) != row_bytes:
                raise EOFError(f"member {member.name[:80]} ends at row {i} of the {member.rows} its header declares")
            if i in targets:
                yield i, np.frombuffer(data, dtype=member.dtype).reshape(chw).astype(np.float32)
