"""ghost_deploy.data.arrays: .npy/.npz calibration data streamed, so memory holds a row, not the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from ghost_deploy.data.arrays import ArrayFile
from ghost_deploy.errors import InputError
from tests.helpers import run_limited

ROWS_IN_512_MIB = (512 << 20) // (3 * 64 * 64 * 4)
_READ = (
    "import sys; from pathlib import Path; from ghost_deploy.data.arrays import ArrayFile; "
    "a = ArrayFile(Path(sys.argv[1]), (3, 64, 64)); print(len(a), a.digest()[:12])"
)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.slow
def test_npz_members_stream_row_by_row(tmp_path: Path) -> None:
    """A 0.5 MB .npz whose one member unpacks to 512 MiB of zeros, read under a 1 GiB address-space limit."""
    path = tmp_path / "calib.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("x.npy", "w", force_zip64=True) as fh:
        fh.write(_npy_header((ROWS_IN_512_MIB, 3, 64, 64)))
        block = bytes(1 << 20)
        for _ in range(512):
            fh.write(block)
    assert path.stat().st_size < 2 << 20
    proc = run_limited(_READ, str(path), memory=1 << 30)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.split()[0] == str(ROWS_IN_512_MIB)


@pytest.mark.slow
def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    """A 512 MiB .npy (a sparse file: no disk used) under a 1 GiB limit: loading it whole twice would not fit."""
    path = tmp_path / "calib.npy"
    header = _npy_header((ROWS_IN_512_MIB, 3, 64, 64))
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + ROWS_IN_512_MIB * 3 * 64 * 64 * 4)
    proc = run_limited(_READ, str(path), memory=1 << 30)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.split()[0] == str(ROWS_IN_512_MIB)


def test_rows_digest_and_subset_match_what_loading_whole_would_give(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    np.savez_compressed(tmp_path / "b.npz", first=data[:4], rest=data[4:].astype(np.float64))
    whole, parts = ArrayFile(tmp_path / "a.npy", (3, 8, 8)), ArrayFile(tmp_path / "b.npz", (3, 8, 8))
    assert np.array_equal(np.stack([s.array for s in parts]), data) and whole.digest() == parts.digest()
    subset = [s.array for s in ArrayFile(tmp_path / "b.npz", (3, 8, 8), limit=3, seed=1)]
    same = [s.array for s in ArrayFile(tmp_path / "a.npy", (3, 8, 8), limit=3, seed=1)]
    assert len(subset) == 3 and all(np.array_equal(a, b) for a, b in zip(subset, same, strict=True))


def test_truncated_non_finite_and_misshaped_arrays_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("x.npy", "w") as fh:
        fh.write(_npy_header((100, 3, 8, 8)) + bytes(3 * 8 * 8 * 4 * 5))  # declares 100 rows, holds 5
    with pytest.raises(InputError, match="ends at row 5"):
        ArrayFile(path, (3, 8, 8))
    bad = np.zeros((2, 3, 8, 8), np.float32)
    bad[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="row 1 contains NaN"):
        ArrayFile(tmp_path / "nan.npy", (3, 8, 8))
    np.save(tmp_path / "shape.npy", np.zeros((2, 3, 9, 9), np.float32))
    with pytest.raises(InputError, match="expected float N x 3 x 8 x 8"):
        ArrayFile(tmp_path / "shape.npy", (3, 8, 8))


def test_numpy_header_warnings_are_one_line_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import struct
    import warnings

    # a header as Python 2 wrote it ('1L'): numpy repairs it and warns, in two lines, at every read
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L, 8L, 8L), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path = tmp_path / "py2.npy"
    rows = np.ones((2, 3, 8, 8), np.float32)
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + rows.tobytes())
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        source = ArrayFile(path, (3, 8, 8))
        assert len(list(source)) == 2  # the file is still read
    assert escaped == []  # before: numpy's UserWarning at each header read, "file:line: UserWarning: ..." + source
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: {path}: Reading `.npy` or `.npz` file required additional header parsing")
