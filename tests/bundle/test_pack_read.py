"""pack reads reports anyone can edit (issue 22.7): every wrong shape is exit 2, one line naming the file and the
key, and no bundle is left behind; before, a dozen shapes ended in TypeError, KeyError or RecursionError (exit 1)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghost_deploy.cli.main import main

Change = Callable[[dict[str, Any]], object] | str | bytes
DEEP = "[" * 50_000 + "]" * 50_000


@pytest.fixture(scope="session")
def profiled(tiny_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny classifier, its report and a real (short) profile report beside it."""
    folder = tmp_path_factory.mktemp("profiled")
    for name in ("tiny.onnx", "tiny.onnx.json"):
        shutil.copyfile(tiny_exports["good"].with_name(name), folder / name)
    args = ["profile", str(folder / "tiny.onnx"), "--warmup-ms", "5", "--duration-s", "0.02", "--iterations", "5"]
    assert main([*args, "--layer-runs", "0", "-q"]) == 0
    return folder


def _copy(profiled: Path, tmp_path: Path, report: Change | None = None, profile: Change | None = None) -> Path:
    """The tiny artifact in a folder of its own, its report or profile changed (a function edits the parsed JSON,
    text or bytes replace the file)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(profiled / "tiny.onnx", folder / "tiny.onnx")
    for name, change in (("tiny.onnx.json", report), ("tiny.onnx.profile.json", profile)):
        data = (profiled / name).read_bytes()
        if isinstance(change, str):
            data = change.encode()
        elif isinstance(change, bytes):
            data = change
        elif change is not None:
            parsed = json.loads(data)
            change(parsed)
            data = json.dumps(parsed).encode()
        (folder / name).write_bytes(data)
    return folder / "tiny.onnx"


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """Set (or, with DELETE, remove) the value at a dotted key path, e.g. 'io.inputs.0.shape'."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in parents:
            data = data[key]
        if value is DELETE:
            del data[last]  # type: ignore[arg-type]
        else:
            data[last] = value  # type: ignore[index]

    return change


def _all(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for one in changes:
            one(data)

    return change


DELETE = object()

REPORT_CASES = {  # id: (change of tiny.onnx.json, what the message says)
    "nested-50000-deep": ('{"target": ' + DEEP + "}", "nested at most 64 levels"),
    "a-list-not-an-object": ("[1]", "not a JSON object"),
    "inputs-a-string": (_set("io.inputs", "abc"), "io.inputs must be a list"),
    "input-shape-a-string": (_set("io.inputs.0.shape", "abc"), "io.inputs[0].shape must be a list of at most 8 int"),
    "input-name-an-integer": (_set("io.inputs.0.name", 3), "io.inputs[0].name must be a string"),
    "output-an-integer": (_set("io.outputs", [5]), "io.outputs[0] must be an object, got 5"),
    "labels-integers": (_set("model.labels", list(range(10))), "model.labels[0] must be a string"),
    "labels-a-string": (_set("model.labels", "0123456789"), "model.labels must be a list"),
    "label-with-a-newline": (
        _set("model.labels", ["a\nb", *map(str, range(9))]),
        r"model.labels[0] must be one line of text without control characters (it has U+000A), got 'a\nb'",
    ),
    "labels-fewer-than-classes": (_set("model.labels", ["a"]), "model.labels must be one label per class (10"),
    "num-classes-ten": (_set("model.num_classes", "ten"), "model.num_classes must be an integer from 1 to 1000000"),
    "num-classes-1e12": (_set("model.num_classes", 10**12), "got 1000000000000"),  # was: OOM-killed
    "num-classes-5000-digits": ("x", "not strict JSON"),  # the text is made in the test
    "nan-literal": ("x", "not strict JSON"),
    "no-preprocessing": (
        _all(_set("preprocessing", DELETE), _set("model.preprocessing", DELETE)),
        "model.preprocessing must be the model's preprocessing",
    ),
    "preprocessing-a-list": (_set("preprocessing", [1]), "preprocessing must be an object"),
    "std-zero": (_set("preprocessing.std", [0, 1, 1]), "preprocessing.std must be 3 positive numbers"),
    "no-model": (_set("model", DELETE), "model must be an object, got nothing"),
    "target-a-list": (_set("target", ["onnx"]), "target must be a string"),
    "batch-a-list": (_set("config.batch", [1]), "config.batch must be an object"),
    "dynamic-batch-without-min": (_set("config.batch", {"dynamic": True}), "config.batch.min must be an integer"),
    "calibration-a-list": (_set("precision", {"calibration": [1]}), "precision.calibration must be an object"),
    "quantized-a-string": (_set("precision", {"quantized": "all"}), "precision.quantized does not fit a bundle"),
    "failures-an-integer": (_set("verification.failures", 5), "verification.failures must be a list"),
    "passed-a-string": (_set("verification.passed", "yes"), "verification.passed must be true or false"),
    "metric-a-string": (
        _set("verification.metrics.top1_agreement", "all"),
        "verification.metrics.top1_agreement does not fit a bundle: 'all' is not of type 'number'",
    ),
    "versions-a-list": (_set("versions", [1]), "versions must be an object"),
    "status-a-list": (_set("status", ["ok"]), "status must be a string"),
}

PROFILE_CASES = {  # id: (change of tiny.onnx.profile.json, what the message says)
    "nested-50000-deep": ('{"results": ' + DEEP + "}", "nested at most 64 levels"),
    "a-list-not-an-object": ("[1]", "the top level must be an object, got a list of 1"),
    "cv-abc": (_set("results.0.cv", "abc"), "results[0].cv must be a finite number of at least 0, got 'abc'"),
    "cv-threshold-a-list": (_set("results.0.cv_threshold", [1]), "results[0].cv_threshold must be a finite number"),
    "stable-a-string": (_set("results.0.stable", "no"), "results[0].stable must be true or false"),
    "latency-a-string": (_set("results.0.latency_ms", "fast"), "results[0].latency_ms must be an object"),
    "latency-value-a-string": (_set("results.0.latency_ms.p99", "slow"), "results[0].latency_ms.p99 must be a finite"),
    "batch-a-string": (_set("results.0.batch", "one"), "results[0].batch must be an integer"),
    "result-a-string": (_set("results", ["x"]), "results[0] must be an object"),
    "environment-a-list": (_set("environment", [1, 2]), "environment must be an object, got a list of 2"),
    "cpu-a-string": (_set("environment.cpu", "x"), "environment.cpu must be an object"),
    "gpus-a-string": (_set("environment.gpus", "abc"), "environment.gpus must be a list"),
    "not-utf8": (b'{"results": ["\xff"]}', "is not UTF-8 text"),
}


def _pack_refused(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `ghost-deploy pack` on `artifact`: exit 2, one line on standard error, nothing written; the line."""
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    code = main(["pack", str(artifact), "-o", str(out / "bundle")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ghost-deploy: error: "), err
    assert list(out.iterdir()) == []  # no bundle, no staging folder
    return err


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_a_report_of_the_wrong_shape_is_exit_2_naming_it(
    case: str, profiled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, said = REPORT_CASES[case]
    if case == "num-classes-5000-digits":
        change = (profiled / "tiny.onnx.json").read_text().replace('"num_classes": 10', '"num_classes": ' + "9" * 5000)
    if case == "nan-literal":
        change = (profiled / "tiny.onnx.json").read_text().replace('"input_size": 32', '"input_size": NaN')
    artifact = _copy(profiled, tmp_path, report=change)
    err = _pack_refused(artifact, tmp_path, capsys)
    assert f"{artifact}.json" in err and said in err


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_a_profile_of_the_wrong_shape_is_exit_2_naming_it(
    case: str, profiled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, said = PROFILE_CASES[case]
    artifact = _copy(profiled, tmp_path, profile=change)
    err = _pack_refused(artifact, tmp_path, capsys)
    assert f"{artifact}.profile.json" in err and said in err


def test_a_profile_whose_cv_is_null_is_packed_and_its_warning_says_not_measured(
    profiled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CV that was not finite is written as null (with `cv_null_reason`) by ghost-deploy itself: it is packed,
    and the instability warning says the CV was not measured instead of failing on the format (exit 1)."""
    artifact = _copy(profiled, tmp_path, profile=_all(_set("results.0.cv", None), _set("results.0.stable", False)))
    capsys.readouterr()
    assert main(["pack", str(artifact), "-o", str(tmp_path / "b"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert any("unstable (CV not measured above" in w for w in result["warnings"])
    assert result["manifest"]["artifacts"][0]["latency"]["results"][0]["cv"] is None
