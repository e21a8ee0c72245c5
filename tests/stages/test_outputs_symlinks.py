"""stages/outputs: the output lock and the staged temporaries never follow a link or write into a file the run
did not create (someone who can write in the output folder must not make ghost-export clobber another file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.stages.outputs import StagedOutput, lock_path, output_lock
from tests.helpers import run_cli, tiny_onnx

VICTIM = b"a file of whoever runs the export\n" * 4


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(VICTIM)
    return victim


@pytest.mark.slow
@pytest.mark.parametrize("to", ["existing", "missing"])
def test_a_link_planted_at_the_lock_is_refused_never_followed(tmp_path: Path, to: str) -> None:
    victim = _victim(tmp_path)
    target = victim if to == "existing" else victim.with_name("created-through-the-link.txt")
    out = tmp_path / "out.onnx"
    lock_path(out).symlink_to(target)
    proc = run_cli("ghost-export", str(tiny_onnx(tmp_path / "tiny.onnx")), "-o", str(out), "--eval-limit", "4")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(lock_path(out)) in errors[0] and "symbolic link" in errors[0], proc.stderr
    assert victim.read_bytes() == VICTIM and not out.exists()
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]  # nothing created through the link
    assert lock_path(out).is_symlink()  # left as it was, for the user to look at


@pytest.mark.parametrize("to", ["existing", "missing"])
def test_output_lock_refuses_a_link_in_process_too(tmp_path: Path, to: str) -> None:
    victim = _victim(tmp_path)
    target = victim if to == "existing" else victim.with_name("created-through-the-link.txt")
    out = tmp_path / "out.onnx"
    lock_path(out).symlink_to(target)
    with pytest.raises(InputError, match="is a symbolic link, not a lock ghost-deploy made"), output_lock(out):
        pass
    assert victim.read_bytes() == VICTIM and sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]


def test_an_existing_lock_file_is_locked_but_never_written_into(tmp_path: Path) -> None:
    """A regular file at the lock's name (a killed run's, or a hard link to someone's file) keeps its bytes."""
    victim = _victim(tmp_path)
    out = tmp_path / "out.onnx"
    os.link(victim, lock_path(out))
    with output_lock(out):
        assert victim.read_bytes() == VICTIM
    assert victim.read_bytes() == VICTIM and not lock_path(out).exists()
    with output_lock(out):  # a lock the run creates itself holds its process id
        assert lock_path(out).read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("kind", ["a directory", "a FIFO"])
def test_a_folder_or_fifo_at_the_lock_is_refused(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.onnx"
    if kind == "a directory":
        lock_path(out).mkdir()
    else:
        os.mkfifo(lock_path(out))
    with pytest.raises(InputError, match=f"is {kind}, not a lock ghost-deploy made"), output_lock(out):
        pass


def test_a_temporary_replaced_by_a_link_is_not_written_through(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    final = tmp_path / "out.onnx"
    with StagedOutput() as staged:
        tmp = staged.temp(final)
        tmp.unlink()
        tmp.symlink_to(victim)  # someone swapped the temporary for a link between its creation and the write
        staged.write_bytes(final, b"the artifact")  # into the file made here, not through the name
        with pytest.raises(InputError, match="was replaced; not moved into place"):
            staged.commit()
    assert victim.read_bytes() == VICTIM and not final.exists()
    assert tmp.is_symlink()  # what someone else put there is not ours to remove


def test_a_temporary_replaced_after_the_write_is_not_moved_into_place(tmp_path: Path) -> None:
    final = tmp_path / "out.onnx"
    final.write_bytes(b"an older good export")
    with StagedOutput() as staged:
        tmp = staged.write_bytes(final, b"the artifact")
        tmp.unlink()
        tmp.write_bytes(b"someone else's bytes")  # another file at the same name
        with pytest.raises(InputError, match="was replaced; not moved into place"):
            staged.commit()
    assert final.read_bytes() == b"an older good export"
