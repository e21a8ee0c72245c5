"""ghost_deploy.fileio: strict JSON, writes that never replace what is not a regular file, stale temporaries."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import (
    atomic_path,
    check_writable,
    finite_only,
    loads_strict,
    remove_stale_temporaries,
    strict_json,
    temp_beside,
    write_json_atomic,
)


def test_strict_json_writes_null_with_a_reason_for_every_non_finite_number(tmp_path: Path) -> None:
    report = {"metrics": {"cosine": math.nan, "max": math.inf, "ok": 1.5}, "rows": [1.0, -math.inf]}
    text = strict_json(report)
    assert ": NaN" not in text and ": Infinity" not in text and "-Infinity\n" not in text
    back = loads_strict(text)
    assert back["metrics"]["cosine"] is None and back["metrics"]["cosine_null_reason"] == "not a finite number (NaN)"
    assert back["metrics"]["max_null_reason"] == "not a finite number (Infinity)" and back["rows"] == [1.0, None]
    kept = finite_only({"x": math.nan, "x_null_reason": "the reference's outputs are all zero"})
    assert kept == {"x": None, "x_null_reason": "the reference's outputs are all zero"}  # a given reason wins
    write_json_atomic(tmp_path / "r.json", report)
    assert loads_strict((tmp_path / "r.json").read_text())["metrics"]["ok"] == 1.5


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}'])
def test_reading_refuses_what_is_not_strict_json(text: str) -> None:
    json.loads(text)  # Python's default reader accepts it: that is why ours is strict
    with pytest.raises(ValueError, match=r"not JSON|too large"):
        loads_strict(text)


def test_a_fifo_or_a_directory_is_never_replaced_by_a_write(tmp_path: Path) -> None:
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    for path, kind in ((fifo, "a FIFO"), (folder, "a directory")):
        with pytest.raises(InputError, match=f"is {kind}, not a regular file"):
            check_writable(path)
        with pytest.raises(InputError, match=kind), atomic_path(path) as tmp:
            tmp.write_bytes(b"x")
    assert fifo.is_fifo() and folder.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["dir.onnx", "out.onnx"]


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    final = tmp_path / "m.onnx"
    mine = temp_beside(final)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m.onnx.ghost-{int(dead.stdout)}-0123abcd.tmp"
    other = tmp_path / f".m.onnx.json.ghost-{int(dead.stdout)}-0123abcd.tmp"  # another destination's
    stale.write_bytes(b"partial")
    other.write_bytes(b"partial")
    assert remove_stale_temporaries(final) == [stale]
    assert mine.exists() and other.exists() and not stale.exists()
