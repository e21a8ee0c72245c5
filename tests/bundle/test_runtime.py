"""ghost_deploy.bundle.runtime: PyTorch's labels, a torch-free import, and every tampering refused with its message."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghost_deploy.bundle.pack import pack
from ghost_deploy.bundle.runtime import (
    MANIFEST,
    Bundle,
    BundleError,
    EngineMismatchError,
    ManifestError,
    MissingFileError,
    SchemaVersionError,
    TamperedFileError,
    TruncatedArchiveError,
    UnexpectedFileError,
    UnsafeMemberError,
    check_engine_origin,
)
from ghost_deploy.errors import InputError
from tests.helpers import DIGITS, NO_TORCH, REPO, SHIPPED_MODEL, exported, run_cli, simulated_if, trt_env

IMAGES = [sorted((DIGITS / "test" / str(d)).glob("*.png"))[0] for d in (0, 3, 5, 7, 9)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    arts = exported(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("bundles")
    paths = {"dir": out / "fp32", "tar": out / "int8.tar.gz"}
    pack([arts["onnx"]], paths["dir"])
    pack([arts["ort-int8"]], paths["tar"])
    return paths


@pytest.fixture(scope="module")
def torch_labels() -> list[str]:
    from ghost_deploy.data.preprocess import preprocess_file
    from ghost_deploy.model.checkpoint import load_model

    torch = pytest.importorskip("torch")
    loaded = load_model(SHIPPED_MODEL)
    pre = loaded.info.preprocessing
    batch = torch.from_numpy(np.stack([preprocess_file(p, pre) for p in IMAGES]))
    with torch.no_grad():
        return [str(i) for i in loaded.module(batch).argmax(1).tolist()]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_run_gives_pytorch_labels(bundles: dict[str, Path], torch_labels: list[str], kind: str) -> None:
    proc = run_cli("run", str(bundles[kind]), *map(str, IMAGES), "--json", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["top"][0]["label"] for r in results] == torch_labels
    assert all(len(r["top"]) == 3 and r["top"][0]["score"] >= r["top"][1]["score"] for r in results)


@pytest.mark.slow
def test_runtime_without_torch(bundles: dict[str, Path], torch_labels: list[str]) -> None:
    code = NO_TORCH + (
        "import sys, json; from ghost_deploy.bundle.runtime import Bundle; "
        "b = Bundle.open(sys.argv[1]); print(json.dumps([b.predict(p)[0].label for p in sys.argv[2:]])); "
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    for kind in ("dir", "tar"):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(bundles[kind]), *map(str, IMAGES)],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == torch_labels


def test_predict_and_infer_inputs(bundles: dict[str, Path]) -> None:
    from PIL import Image

    with Bundle.open(bundles["dir"]) as b:
        img = Image.open(IMAGES[1]).convert("RGB")
        from_path, from_pil = b.predict(IMAGES[1]), b.predict(img)
        from_array = b.predict(np.asarray(img))
        assert from_path == from_pil == from_array
        assert abs(sum(p.score for p in b.predict(img, top_k=10)) - 1.0) < 1e-6
        batch = np.stack([b.preprocess(p) for p in IMAGES])
        logits = b.infer(batch)["logits"]  # fixed batch 1 model, run per sample
        assert logits.shape == (5, 10)
        with pytest.raises(InputError, match="expected a batch"):
            b.infer(np.zeros((1, 3, 8, 8), np.float32))
    proc = run_cli("inspect", str(bundles["tar"]))
    assert proc.returncode == 0 and "ort-int8" in proc.stdout and "sha256 verified" in proc.stdout


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_tar(src: Path, dst: Path, extra: list[tarfile.TarInfo], drop: str | None = None) -> Path:
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            if m.name != drop:
                tout.addfile(m, tin.extractfile(m))
        for info in extra:
            data = b"evil" if info.isreg() else None
            if data is not None:
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def test_flipped_byte_in_each_file_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    manifest = json.loads((bundles["dir"] / MANIFEST).read_text())
    for i, entry in enumerate(manifest["files"]):
        d = _copy(bundles["dir"], tmp_path / f"b{i}")
        data = bytearray((d / entry["path"]).read_bytes())
        data[len(data) // 2] ^= 0x01
        (d / entry["path"]).write_bytes(bytes(data))
        with pytest.raises(TamperedFileError, match=f"{entry['path']} has sha256"):
            Bundle.open(d)


def test_each_defect_has_its_own_error(bundles: dict[str, Path], tmp_path: Path) -> None:
    tar = bundles["tar"]
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(TruncatedArchiveError, match="truncated"):
        Bundle.open(truncated)
    dotdot = tarfile.TarInfo("../escape.txt")
    with pytest.raises(UnsafeMemberError, match=r"climbs out .* '\.\.'"):
        Bundle.open(_rewrite_tar(tar, tmp_path / "a.tar.gz", [dotdot]))
    with pytest.raises(UnsafeMemberError, match="absolute path"):
        Bundle.open(_rewrite_tar(tar, tmp_path / "b.tar.gz", [tarfile.TarInfo("/tmp/escape.txt")]))
    link = tarfile.TarInfo("labels2.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(UnsafeMemberError, match="is a link"):
        Bundle.open(_rewrite_tar(tar, tmp_path / "c.tar.gz", [link]))
    dev = tarfile.TarInfo("null")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(UnsafeMemberError, match="device"):
        Bundle.open(_rewrite_tar(tar, tmp_path / "d.tar.gz", [dev]))
    with pytest.raises(UnexpectedFileError, match="does not list"):
        Bundle.open(_rewrite_tar(tar, tmp_path / "e.tar.gz", [tarfile.TarInfo("extra.txt")]))
    with pytest.raises(MissingFileError, match=r"lacks labels\.txt"):
        Bundle.open(_rewrite_tar(tar, tmp_path / "f.tar.gz", [], drop="labels.txt"))
    assert not (tmp_path.parent / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()
    d = _copy(bundles["dir"], tmp_path / "v")
    m = json.loads((d / MANIFEST).read_text())
    (d / MANIFEST).write_text(json.dumps({**m, "schema_version": 2}))
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        Bundle.open(d)
    (d / MANIFEST).write_text(json.dumps({**m, "input": {"name": "x"}}))
    with pytest.raises(ManifestError, match="fails its schema"):
        Bundle.open(d)
    d2 = _copy(bundles["dir"], tmp_path / "s")
    (d2 / "README.md").unlink()
    (d2 / "README.md").symlink_to(d2 / "labels.txt")
    with pytest.raises(UnsafeMemberError, match="symbolic link"):
        Bundle.open(d2)
    (d2 / "README.md").unlink()
    with pytest.raises(MissingFileError, match=r"lacks README\.md"):
        Bundle.open(d2)


def test_engine_guard_names_expected_and_found() -> None:
    origin = {"version": "10.3.0", "compute_capability": "8.7"}
    check_engine_origin(origin, "10.3.0", "8.7")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.3\.0.*TensorRT 10\.13"):
        check_engine_origin(origin, "10.13.0", "8.7")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.6"):
        check_engine_origin(origin, "10.3.0", "8.6")
    check_engine_origin({**origin, "hardware_compatibility": "AMPERE_PLUS"}, "10.3.0", "8.6")


@pytest.mark.slow
def test_engine_bundle_gives_pytorchs_labels(bundles: dict[str, Path], tmp_path: Path, torch_labels: list[str]) -> None:
    """On the installed TensorRT, else the simulated 10.3 (whose bundle opens only under the same simulation)."""
    engine = tmp_path / "g.trt-fp16.engine"
    env = trt_env("10.3")
    proc = run_cli(
        "ghost-export", str(SHIPPED_MODEL), "--target", "trt-fp16", "-o", str(engine), "--eval-limit", "32", env=env
    )
    assert proc.returncode == 0, proc.stderr
    with simulated_if(env):
        pack([engine], tmp_path / "e.tar.gz")
        with Bundle.open(tmp_path / "e.tar.gz") as b:
            assert b.artifact["kind"] == "engine"
            assert [b.predict(p)[0].label for p in IMAGES] == torch_labels


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutation=st.dictionaries(
        st.sampled_from(
            [
                "schema_version",
                "files",
                "input",
                "artifacts",
                "labels_file",
                "preprocessing",
                "num_labels",
                "model",
                "x",
            ]
        ),
        json_values,
        max_size=3,
    )
)
def test_arbitrary_manifests_raise_only_bundle_errors(bundles: dict[str, Path], tmp_path: Path, mutation: dict) -> None:  # type: ignore[type-arg]
    d = tmp_path / "h"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(bundles["dir"], d)
    m = json.loads((d / MANIFEST).read_text())
    (d / MANIFEST).write_text(json.dumps({**m, "schema_version": 1, **mutation}))
    with contextlib.suppress(BundleError):
        Bundle.open(d).close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(0, 10**7), flip=st.integers(0, 10**7), names=st.lists(st.text(min_size=1, max_size=8), max_size=2)
)
@pytest.mark.slow
def test_arbitrary_archives_raise_only_bundle_errors(
    bundles: dict[str, Path], tmp_path: Path, cut: int, flip: int, names: list[str]
) -> None:
    data = bytearray(bundles["tar"].read_bytes())
    data[flip % len(data)] ^= 0x40
    path = tmp_path / "h.tar.gz"
    path.write_bytes(bytes(data[: len(data) - cut % 64]))
    if names:
        path = _rewrite_tar(bundles["tar"], tmp_path / "n.tar.gz", [tarfile.TarInfo(n) for n in names])
    dest = tmp_path / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    try:
        Bundle.open(path, extract_to=dest).close()
    except BundleError:
        assert not dest.exists()  # nothing left of a refused bundle, not even the folder this call created


# --- reliability (issue 22): the Bundle API's inputs, and a closed bundle ---


def test_predict_gives_one_answer_for_a_file_and_its_pil_image(tiny_bundle: Path, tmp_path: Path) -> None:
    """A 16-bit image: `predict(Image.open(p))` once clipped it to white where `predict(p)` scaled it."""
    from PIL import Image

    path = tmp_path / "w16.png"
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(path)
    with Bundle.open(tiny_bundle) as b, Image.open(path) as img:
        assert np.abs(b.preprocess(img) - b.preprocess(path)).max() == 0.0
        assert b.predict(img, top_k=3) == b.predict(path, top_k=3)


def test_a_closed_bundle_raises_the_projects_error(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    """After close() (a temporary extraction, removed) predict raised ONNX Runtime's raw NoSuchFile."""
    pack([tiny_exports["good"]], tmp_path / "t.tar.gz")
    image = np.zeros((3, 32, 32), np.float32)
    bundle = Bundle.open(tmp_path / "t.tar.gz")
    bundle.predict(image)
    bundle.close()
    bundle.close()  # twice: nothing more
    with pytest.raises(BundleError, match="is closed") as raised:
        bundle.predict(image)
    assert type(raised.value).__name__ == "BundleClosedError" and raised.value.exit_code == 2


def test_closing_while_other_threads_predict(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    """Each call under way finishes with its result or raises BundleClosedError: never an ONNX Runtime error."""
    import threading

    pack([tiny_exports["good"]], tmp_path / "t.tar.gz")
    bundle = Bundle.open(tmp_path / "t.tar.gz")
    image = np.zeros((3, 32, 32), np.float32)
    expected = bundle.predict(image)
    outcomes: list[object] = []
    started = threading.Barrier(5)

    def loop() -> None:
        started.wait()
        try:
            for _ in range(10_000):
                assert bundle.predict(image) == expected
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    bundle.close()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 4 and all(isinstance(exc, BundleError) and "is closed" in str(exc) for exc in outcomes), (
        outcomes
    )
    assert not bundle.root.exists()


@pytest.mark.parametrize(
    "value",
    [
        np.full((3, 32, 32), None, dtype=object),
        np.full((3, 32, 32), "a"),
        np.full((32, 32, 3), b"x"),
        np.zeros((3, 32, 32), np.complex64),
        [[1.0, 2.0], [3.0]],
    ],
    ids=["object", "str", "bytes", "complex", "ragged"],
)
def test_arrays_that_are_not_numbers_are_input_errors(tiny_bundle: Path, value: object) -> None:
    """A string array was a ValueError, an object array 'holds NaN or Inf' (exit 1 or a wrong message)."""
    with Bundle.open(tiny_bundle) as b:
        with pytest.raises(InputError, match=r"not (numbers|an array of numbers)"):
            b.predict(value)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=r"not (numbers|an array of numbers)"):
            b.infer(np.asarray(value, dtype=object)[None] if not isinstance(value, list) else value)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_k", [2.5, True, -1, 0, 11, "3"])
def test_top_k_outside_1_to_the_classes_is_an_input_error(tiny_bundle: Path, top_k: object) -> None:
    """2.5 was a TypeError; True, -1 and 0 gave one label, 11 gave 10 (a 10-class model)."""
    with Bundle.open(tiny_bundle) as b:
        with pytest.raises(InputError, match=r"top_k \(--top-k\) must be a whole number from 1 to 10"):
            b.predict(np.zeros((3, 32, 32), np.float32), top_k=top_k)  # type: ignore[arg-type]
        assert len(b.predict(np.zeros((3, 32, 32), np.float32))) == 5
        assert len(b.predict(np.zeros((3, 32, 32), np.float32), top_k=np.int64(10))) == 10


def test_run_top_k_beyond_the_classes_is_exit_2(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ghost_deploy.cli.main import main

    assert main(["run", str(tiny_bundle), str(IMAGES[0]), "--top-k", "11"]) == 2
    assert "from 1 to 10" in capsys.readouterr().err
