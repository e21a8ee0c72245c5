"""ghost_deploy.bundle.checks: a bundle cannot read outside itself, and its manifest must describe its model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import external_data_helper, numpy_helper

from ghost_deploy.bundle.runtime import Bundle, ExternalDataError, ManifestError, UnsafeMemberError
from ghost_deploy.cli.bundle import summarise
from ghost_deploy.cli.main import main
from ghost_deploy.errors import GhostDeployError
from tests.helpers import DIGITS

IMAGE = sorted((DIGITS / "test" / "3").glob("*.png"))[0]


def _copy(bundle: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(bundle, dest)
    return dest


def _edit(bundle: Path, change: Any) -> None:
    """Rewrite manifest.json through `change(manifest)` (the manifest is not itself hashed)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _replace_file(bundle: Path, name: str, data: bytes) -> None:
    """Replace a file and record its new size and sha256, as a crafted bundle would."""
    (bundle / name).write_bytes(data)

    def fix(m: dict[str, Any]) -> None:
        entry = next(f for f in m["files"] if f["path"] == name)
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()

    _edit(bundle, fix)


def test_an_onnx_reading_external_data_is_refused_before_any_session(tmp_path: Path, tiny_bundle: Path) -> None:
    """The crafted model's classifier weights point at /etc/passwd (ONNX external data, '..' included)."""
    bundle = _copy(tiny_bundle, tmp_path / "b")
    model = onnx.load(str(bundle / "tiny.onnx"))
    fc = next(i for i in model.graph.initializer if len(i.dims) == 2)
    fc.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fc), fc.name))  # as raw bytes
    external_data_helper.set_external_data(fc, location="../../../../../../etc/passwd", offset=0, length=320)
    fc.ClearField("raw_data")
    fc.data_location = onnx.TensorProto.EXTERNAL
    _replace_file(bundle, "tiny.onnx", model.SerializeToString())
    with pytest.raises(ExternalDataError, match="stored outside the model"):
        Bundle.open(bundle)


def test_pack_refuses_an_onnx_with_external_data(tmp_path: Path, tiny_exports: dict[str, Path]) -> None:
    from ghost_deploy.bundle.pack import pack

    src = tiny_exports["good"]
    art = tmp_path / "ext.onnx"
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))  # as raw bytes
    onnx.save(model, str(art), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    report = json.loads(src.with_name(src.name + ".json").read_text())
    report["artifact"].update(path=str(art), sha256=hashlib.sha256(art.read_bytes()).hexdigest())
    art.with_name("ext.onnx.json").write_text(json.dumps(report))
    with pytest.raises(ExternalDataError, match="stored outside the model"):
        pack([art], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["input"].update(name="images"), "has no input named 'images'"),
        (lambda m: m["output"].update(name="probs"), "has no output named 'probs'"),
        (lambda m: m["input"].update(shape=[1, 3, 64, 64]), "does not match the preprocessing's crop"),
        (lambda m: m["output"].update(shape=[1, 12]), "disagree on the number of classes"),
        (lambda m: m["artifacts"][0]["verification"]["metrics"].update(top1_agreement="high"), "fails its schema"),
        (lambda m: m["artifacts"][0].update(kind="engine"), "is an ONNX model, but manifest.json says"),
        (lambda m: m["preprocessing"].update(resize=16384, crop=16384), "fails its schema"),
    ],
)
def test_the_manifest_is_cross_checked_with_the_model_at_open(
    tmp_path: Path, tiny_bundle: Path, change: Any, message: str
) -> None:
    bundle = _copy(tiny_bundle, tmp_path / "b")
    _edit(bundle, change)
    with pytest.raises(ManifestError, match=message):
        Bundle.open(bundle)


def test_an_artifact_that_is_not_what_its_format_says_is_refused_at_open(tmp_path: Path, tiny_bundle: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path / "b")
    _replace_file(bundle, "tiny.onnx", b"\x08\x07" + os.urandom(300))
    with pytest.raises(ManifestError, match="is not an ONNX model"):
        Bundle.open(bundle)


@pytest.mark.parametrize("where", ["file size", "crop"])
def test_a_whole_float_where_an_integer_belongs_is_refused_at_open(
    tmp_path: Path, tiny_bundle: Path, where: str
) -> None:
    """JSON Schema calls 0.0 an integer; a file size of 0.0 once crashed the hashing with a TypeError (exit 1)."""

    def change(m: dict[str, Any]) -> None:
        if where == "crop":
            m["preprocessing"]["crop"] = float(m["preprocessing"]["crop"])
        else:
            m["files"][0]["bytes"] = 0.0

    bundle = _copy(tiny_bundle, tmp_path / "b")
    _edit(bundle, change)
    with pytest.raises(ManifestError, match="is not of type 'integer'"):
        Bundle.open(bundle)
    assert main(["inspect", str(bundle)]) == 2


def test_hard_links_are_refused(tmp_path: Path, tiny_bundle: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path / "b")
    os.link(bundle / "labels.txt", tmp_path / "elsewhere.txt")  # the same bytes under a name outside the bundle
    with pytest.raises(UnsafeMemberError, match="is a hard link"):
        Bundle.open(bundle)


_NAMES = st.sampled_from(["input", "logits", "images", "", "é" * 3, "a" * 300, "../x", "manifest.json"])
_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([math.nan, math.inf, -math.inf, 1e308])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | _NAMES
    | st.lists(st.integers(-2, 70), max_size=5) | st.just({}) | st.just([])
)  # fmt: skip


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_manifest_leaves_raise_only_the_projects_errors(tmp_path: Path, tiny_bundle: Path, data: Any) -> None:
    """Leaves of a valid manifest replaced by values of the right and the wrong type, NaN (written as the
    non-standard token), huge numbers, unicode, names the model lacks: open, inspect, predict and run only
    ever fail with the project's errors (exit 2, 3 or 4), never exit 1."""
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    paths = _leaves(manifest)
    for _ in range(data.draw(st.integers(1, 3))):
        _set(manifest, data.draw(st.sampled_from(paths)), data.draw(_LEAVES))
    bundle = _copy(tiny_bundle, tmp_path / "fuzz")
    (bundle / "manifest.json").write_text(json.dumps(manifest))  # allow_nan: NaN is written as the token NaN
    with contextlib.suppress(GhostDeployError), Bundle.open(bundle, warn=False) as opened:
        summarise(opened.manifest)
        opened.predict(IMAGE, top_k=3)
    for command in (["inspect", str(bundle)], ["run", str(bundle), str(IMAGE)]):
        assert main(command) in (0, 2, 3, 4), command
