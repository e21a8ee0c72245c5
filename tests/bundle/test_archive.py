"""ghost_deploy.bundle.archive: what an archive claims never makes opening it allocate, recurse or write."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ghost_deploy.bundle.runtime import Bundle, TamperedFileError
from tests.helpers import REPO, gzip_of_zeros, run_limited

_OPEN = (
    "import sys; from ghost_deploy.bundle.runtime import Bundle\n"
    "try:\n    Bundle.open(sys.argv[1], extract_to=sys.argv[2] if len(sys.argv) > 2 else None).close()\n"
    "except Exception as exc:\n    print(type(exc).__name__, str(exc)[:2000])"
)


def _header(name: str, size: int, kind: bytes = b"0") -> bytes:
    """One ustar header block."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.USTAR_FORMAT) if size < 8**11 else _big_header(info)


def _big_header(info: tarfile.TarInfo) -> bytes:
    """A GNU header with a base-256 size field (sizes of 8 GiB and more)."""
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _opened_in_child(archive: Path, *extra: str, **limits: int) -> str:
    proc = run_limited(_OPEN, str(archive), *extra, **limits)
    assert proc.returncode == 0, proc.stderr[-1500:]
    return proc.stdout


@pytest.mark.parametrize("kind", [b"L", b"x"])
def test_a_huge_long_name_or_pax_header_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """3 GiB of GNU long name / PAX header in a 3 MB archive, opened under a 2 GiB address-space limit."""
    archive = tmp_path / "huge.tar.gz"
    archive.write_bytes(gzip_of_zeros(_header("././@LongLink", 3 << 30, kind), 3 << 30))
    assert archive.stat().st_size < 8 << 20
    out = _opened_in_child(archive, memory=2 << 30)
    assert out.startswith("UnsafeMemberError") and "extension header" in out and len(out) < 500, out[:300]


def test_thousands_of_chained_extension_headers_are_refused_without_recursion(tmp_path: Path) -> None:
    block = _header("././@LongLink", 10, b"L") + b"a" * 10 + bytes(502)
    archive = tmp_path / "chain.tar.gz"
    archive.write_bytes(gzip.compress(block * 3000 + _header("x.txt", 0) + bytes(1024)))
    out = _opened_in_child(archive)
    assert out.startswith("UnsafeMemberError") and "chained extension headers" in out, out[:300]


def _rebuilt(bundle: Path, readme: bytes | int, claim: tuple[int, str] | None = None) -> bytes:
    """The bundle as a .tar.gz with README.md first, replaced by `readme` (bytes, or that many zero bytes);
    `claim` is the (size, sha256) its manifest then says README.md has."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = readme if isinstance(readme, int) else len(readme)
    entry = next(f for f in manifest["files"] if f["path"] == "README.md")
    entry["bytes"], entry["sha256"] = claim or (size, entry["sha256"])
    files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.name not in ("README.md", "manifest.json")}
    files["manifest.json"] = json.dumps(manifest).encode()
    head = _header("README.md", size)
    if isinstance(readme, bytes):
        stream = gzip.compress(head + readme + bytes(-size % 512))
    else:
        stream = gzip_of_zeros(head, size)
    tail = b"".join(_header(n, len(d)) + d + bytes(-len(d) % 512) for n, d in sorted(files.items()))
    return stream + gzip.compress(tail + bytes(1024))


@pytest.mark.slow
def test_a_gzip_bomb_is_hashed_before_anything_is_written(tmp_path: Path, tiny_bundle: Path) -> None:
    """README.md replaced by 256 MiB of zeros whose sha256 is not the manifest's: refused, and no file of more
    than 32 MiB may be written (RLIMIT_FSIZE): today's code wrote all of it before checking."""
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(_rebuilt(tiny_bundle, 256 << 20))
    out = _opened_in_child(archive, str(tmp_path / "dest"), file_size=32 << 20)
    assert out.startswith("TamperedFileError") and "README.md has sha256" in out, out[:300]
    assert not (tmp_path / "dest").exists()


def test_a_changed_header_byte_is_a_changed_archive_not_a_missing_manifest(tmp_path: Path, tiny_bundle: Path) -> None:
    raw = bytearray(gzip.decompress(_rebuilt(tiny_bundle, (tiny_bundle / "README.md").read_bytes())))
    second = (
        512 + len((tiny_bundle / "README.md").read_bytes()) + (-len((tiny_bundle / "README.md").read_bytes()) % 512)
    )
    raw[second + 10] ^= 0x01  # one byte of the second member's header
    archive = tmp_path / "changed.tar.gz"
    archive.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(TamperedFileError, match="changed or is corrupt"):
        Bundle.open(archive)
    data = bytearray((archive).read_bytes())
    data[-6] ^= 0x01  # one byte of the gzip trailer (CRC / length)
    archive.write_bytes(bytes(data))
    with pytest.raises(TamperedFileError, match="changed or is corrupt"):
        Bundle.open(archive)


@pytest.mark.slow
def test_an_interrupted_extraction_leaves_nothing(tmp_path: Path, tiny_bundle: Path) -> None:
    digest = hashlib.sha256()
    for _ in range(256):
        digest.update(bytes(1 << 20))
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(_rebuilt(tiny_bundle, 256 << 20, (256 << 20, digest.hexdigest())))
    dest = tmp_path / "new" / "dest"
    code = _OPEN.replace(
        "except Exception", "except KeyboardInterrupt as exc:\n    print('interrupted')\nexcept Exception"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(archive), str(dest)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while not (dest / "README.md").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert out.strip() == "interrupted", out
    assert not (tmp_path / "new").exists()  # neither the files nor the folders the call created


@pytest.mark.slow
def test_a_bundle_left_open_is_removed_when_collected_or_at_exit(tmp_path: Path, tiny_bundle: Path) -> None:
    import gc

    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(_rebuilt(tiny_bundle, (tiny_bundle / "README.md").read_bytes()))
    bundle = Bundle.open(archive)
    root = bundle.root
    assert (root / "manifest.json").is_file()
    del bundle
    gc.collect()
    assert not root.exists()
    code = "import sys; from ghost_deploy.bundle.runtime import Bundle; b = Bundle.open(sys.argv[1]); print(b.root)"
    proc = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and not Path(proc.stdout.strip()).exists(), proc.stderr


def test_a_refused_extract_to_removes_what_it_created(tmp_path: Path, tiny_bundle: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(_rebuilt(tiny_bundle, b"not the README the manifest describes"))
    with pytest.raises(TamperedFileError):
        Bundle.open(archive, extract_to=tmp_path / "a" / "b" / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz"]
