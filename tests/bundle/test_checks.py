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


# --- reliability (issue 22): the manifest bounds what runs; what is checked is what runs; what is shown is inert ---


def test_the_manifests_batch_is_bounded_and_a_fixed_models_own(tmp_path: Path, tiny_bundle: Path) -> None:
    """[1048576, 3, 32, 32] over a symbolic batch made `run` on one image allocate 12 GiB (np.repeat padding)."""
    from tests.helpers import tiny_onnx

    bundle = _copy(tiny_bundle, tmp_path / "b")
    _replace_file(bundle, "tiny.onnx", tiny_onnx(tmp_path / "dyn.onnx", batch="N").read_bytes())
    for batch, refused in ((1048576, True), (1025, True), (1024, False), (8, False)):
        _edit(bundle, lambda m, n=batch: m["input"].update(shape=[n, 3, 32, 32]))
        if refused:
            with pytest.raises(ManifestError, match=rf"input fixed batch {batch} at 32 x 32 .*at most 1024"):
                Bundle.open(bundle)
        else:
            with Bundle.open(bundle) as opened:  # a short batch is padded to the fixed one
                assert len(opened.predict(IMAGE, top_k=2)) == 2
    assert main(["run", str(bundle), str(IMAGE)]) == 0
    _edit(bundle, lambda m: m["input"].update(shape=[1048576, 3, 32, 32]))
    assert main(["run", str(bundle), str(IMAGE)]) == 2
    fixed = _copy(tiny_bundle, tmp_path / "f")  # its model's batch is 1
    _edit(fixed, lambda m: m["input"].update(shape=[-1, 3, 32, 32]))
    with pytest.raises(ManifestError, match=r"has a fixed batch of 1, manifest\.json says -1"):
        Bundle.open(fixed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["input"].update(dynamic_batch={"min": 9, "opt": 5, "max": 2}), "need 1 <= min <= opt <= max"),
        (lambda m: m["input"].update(dynamic_batch={"min": 1, "opt": 1, "max": 10**6}), "fails its schema"),
        (lambda m: m.update(deepstream={"file": "absent.txt", "exact": True}), "refers to absent.txt, which its file"),
        (lambda m: m["artifacts"][0].update(report="absent.json"), "refers to absent.json, which its file list"),
        (lambda m: m["model"].update(width=int("9" * 400)), "fails its schema at model/width"),
        (lambda m: m["files"][0].update(sha256=m["files"][0]["sha256"] + "\n"), "fails its schema at files/0/sha256"),
    ],
    ids=["min>max", "huge max", "deepstream", "report", "400 digits", "sha256 newline"],
)
def test_manifest_values_that_meant_nothing_are_refused(
    tmp_path: Path, tiny_bundle: Path, change: Any, message: str
) -> None:
    bundle = _copy(tiny_bundle, tmp_path / "b")
    _edit(bundle, change)
    with pytest.raises(ManifestError, match=message):
        Bundle.open(bundle)


def test_a_file_name_with_a_trailing_newline_is_refused(tmp_path: Path, tiny_bundle: Path) -> None:
    """The schema's `$` matched before a final newline (Python's search): 'labels.txt\\n' passed as a name."""
    bundle = _copy(tiny_bundle, tmp_path / "b")
    (bundle / "labels.txt").rename(bundle / "labels.txt\n")

    def rename(m: dict[str, Any]) -> None:
        m["labels_file"] = "labels.txt\n"
        next(f for f in m["files"] if f["path"] == "labels.txt")["path"] = "labels.txt\n"

    _edit(bundle, rename)
    with pytest.raises(ManifestError, match="fails its schema"):
        Bundle.open(bundle)


def test_a_key_named_twice_is_refused(tmp_path: Path, tiny_bundle: Path) -> None:
    """json.loads keeps the last of two keys; another reader may take the first: which manifest is this?"""
    bundle = _copy(tiny_bundle, tmp_path / "b")
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.replace('"num_labels"', '"num_labels": 999, "num_labels"', 1))
    with pytest.raises(ManifestError, match="the key 'num_labels' appears twice"):
        Bundle.open(bundle)
    assert main(["inspect", str(bundle)]) == 2


def test_an_onnx_replaced_after_open_is_never_run(tmp_path: Path, tiny_bundle: Path) -> None:
    """A directory bundle's ONNX was read lazily by ONNX Runtime: swapped after open, an unchecked model ran."""
    from tests.helpers import tiny_onnx

    bundle = _copy(tiny_bundle, tmp_path / "b")
    with Bundle.open(bundle) as opened:
        expected = opened.predict(IMAGE, top_k=3)
    with Bundle.open(bundle) as opened:
        shutil.copyfile(tiny_onnx(tmp_path / "other.onnx", poison=1e3), bundle / "tiny.onnx")  # class 3 always wins
        assert opened.predict(IMAGE, top_k=3) == expected


def test_inspect_and_run_show_control_characters_escaped(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest's or a label's escape sequences (clear screen, set title, CSI as C1) reached the terminal raw."""
    bundle = _copy(tiny_bundle, tmp_path / "b")
    _edit(bundle, lambda m: (m["model"].update(arch="\x1b[2J\x1b]0;pwned\x07x\ny"), m.update(created="\x9b31m\x7f")))
    labels = "".join(f"\x1b[31m{i}\r\n" for i in range(10)).encode()
    _replace_file(bundle, "labels.txt", labels)
    assert main(["inspect", str(bundle)]) == 0
    assert main(["run", str(bundle), str(IMAGE), "--top-k", "10"]) == 0
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert not any(ch in text for ch in "\x1b\x07\x9b\x7f\r")
    assert r"model: \x1b[2J\x1b]0;pwned\x07x\ny (width" in text and r"\x9b31m\x7f" in text
    assert text.count(r"\x1b[31m") == 10
    _edit(bundle, lambda m: m["artifacts"][0].update(versions={"\x1b]0;pwned\x07": 5}))  # quoted by an error
    assert main(["inspect", str(bundle)]) == 2 and main(["run", str(bundle), str(IMAGE)]) == 2
    shown = capsys.readouterr()
    assert r"versions/\x1b]0;pwned\x07: 5 is not of type" in shown.err and "\x1b" not in shown.err
