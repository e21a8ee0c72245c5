"""ghost_deploy.fileio: strict JSON, writes that never replace what is not a regular file, stale temporaries."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghost_deploy.errors import InputError, StepFailed
from ghost_deploy.fileio import (
    LockRefused,
    atomic_path,
    check_writable,
    copy_new,
    finite_only,
    loads_strict,
    open_created,
    open_lock,
    read_bytes_limited,
    remove_stale_temporaries,
    strict_json,
    temp_beside,
    temp_dir_beside,
    write_error,
    write_json_atomic,
    write_new,
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


VICTIM = b"a file of whoever runs ghost-deploy\n"


def _dead_pid() -> int:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(dead.stdout)


@pytest.mark.parametrize("to", ["existing", "missing"])
def test_a_new_file_is_never_created_through_a_planted_link(tmp_path: Path, to: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    link = tmp_path / "staging-file"
    link.symlink_to(victim if to == "existing" else tmp_path / "created-through-the-link")
    with pytest.raises(FileExistsError):
        write_new(link, b"ours")
    with pytest.raises(FileExistsError):
        copy_new(victim, link)
    assert victim.read_bytes() == VICTIM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging-file", "victim.txt"]


def test_a_temporary_reopened_by_name_refuses_a_link_swapped_in(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    final = tmp_path / "out.png"
    with pytest.raises(InputError, match="replaced by a link; not followed"), atomic_path(final) as tmp:
        tmp.unlink()
        tmp.symlink_to(victim)
        with open_created(tmp, final) as fh:
            fh.write(b"ours")
    assert victim.read_bytes() == VICTIM and not final.exists()


def test_a_lock_file_is_written_only_when_created_and_a_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    lock = tmp_path / ".x.lock"
    os.link(victim, lock)  # an existing lock file: opened read-only, its bytes kept
    os.close(open_lock(lock))
    assert victim.read_bytes() == VICTIM
    lock.unlink()
    os.close(open_lock(lock))
    assert lock.read_text() == f"{os.getpid()}\n"
    lock.unlink()
    lock.symlink_to(tmp_path / "missing")
    with pytest.raises(LockRefused, match="symbolic link"):
        open_lock(lock)
    assert not (tmp_path / "missing").exists()


def test_stale_staging_folders_are_removed_and_links_named_like_them_never_followed(tmp_path: Path) -> None:
    final = tmp_path / "b"
    mine = temp_dir_beside(final)
    dead = _dead_pid()
    stale = tmp_path / f".b.ghost-{dead}-0123abcd.tmp"
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_bytes(VICTIM)
    link = tmp_path / f".b.ghost-{dead}-4567cdef.tmp"
    link.symlink_to(elsewhere)
    assert sorted(remove_stale_temporaries(final)) == sorted([stale, link])
    assert mine.is_dir() and not stale.exists() and not link.is_symlink()
    assert (elsewhere / "keep.txt").read_bytes() == VICTIM


@pytest.mark.parametrize(
    ("code", "cause"),
    [(errno.EFBIG, "file too large"), (errno.ENOSPC, "no space left"), (errno.EDQUOT, "disk quota exceeded")],
)
def test_a_write_that_fails_for_want_of_space_names_the_path_and_the_cause(code: int, cause: str) -> None:
    error = write_error(Path("out/b.tar.gz"), OSError(code, os.strerror(code)))
    assert isinstance(error, StepFailed) and error.exit_code == 1
    assert str(error).startswith(f"cannot write out/b.tar.gz: {cause}") and "\n" not in str(error)


@pytest.mark.slow
def test_a_small_file_under_a_large_limit_reads_under_an_address_space_limit(tmp_path: Path) -> None:
    """read(n) reserves n bytes: reading a 5-byte file under a 2 GiB limit must not ask for 2 GiB (a process under
    `ulimit -v`, a Jetson without overcommit). Before: MemoryError in every reader of ONNX files."""
    from tests.helpers import run_limited

    small = tmp_path / "small.bin"
    small.write_bytes(b"hello")
    code = (
        "import sys; from pathlib import Path; from ghost_deploy.fileio import read_bytes_limited; "
        "print(read_bytes_limited(Path(sys.argv[1]), 2 << 30).decode())"
    )
    proc = run_limited(code, str(small), memory=1 << 30)
    assert proc.returncode == 0 and proc.stdout.strip() == "hello", proc.stderr


def test_a_file_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 10)
    assert read_bytes_limited(big, 10) == b"x" * 10
    big.write_bytes(b"x" * 11)
    with pytest.raises(InputError, match="larger than 10 bytes"):
        read_bytes_limited(big, 10)
