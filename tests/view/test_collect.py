"""Gathering the page from files: what is accepted, what is refused (naming the file), what joins what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.view.collect import Collector
from tests.view.samples import MODEL, artifact_report, engine_report, profile_report, write

LATENCIES = [1.0, 2.0, 3.0, 4.0] * 5


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("missing.json", None),
        ("list.json", "[1, 2]"),
        ("broken.json", '{"target": '),
        ("other.json", json.dumps({"name": "not ours", "target": "x"})),
        ("notes.txt", "hello"),
        ("lonely.onnx", "onnx bytes without a report beside"),
    ],
)
def test_what_is_no_report_is_refused_naming_the_file(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as err:
        Collector().add_path(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_profile_joins_its_artifact_by_sha256_even_renamed(tmp_path: Path) -> None:
    collector = Collector()
    collector.add_path(write(tmp_path, "renamed.onnx.json", artifact_report("renamed.onnx", sha256="1" * 64)))
    collector.add_path(write(tmp_path, "p.json", profile_report("original.onnx", "1" * 64, LATENCIES)))
    (target,) = collector.page().targets
    assert target.file == "renamed.onnx" and target.profile is not None
    assert target.profile.runs[0].latency["median"] == 3.0


def test_a_profile_of_an_artifact_not_given_is_a_row_of_its_own(tmp_path: Path) -> None:
    collector = Collector()
    collector.add_path(write(tmp_path, "p.json", profile_report("other.onnx", "2" * 64, LATENCIES)))
    (target,) = collector.page().targets
    assert target.file == "other.onnx" and target.top1 is None and target.profile is not None


def test_the_profile_beside_an_artifact_is_found(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x" * 2048)
    write(tmp_path, "m.onnx.json", artifact_report("m.onnx", sha256="3" * 64))
    write(tmp_path, "m.onnx.profile.json", profile_report("m.onnx", "3" * 64, LATENCIES))
    collector = Collector()
    collector.add_path(tmp_path / "m.onnx")
    (target,) = collector.page().targets
    assert target.bytes == 2048  # the file's own size, not the report's
    assert target.profile is not None and target.profile.source == "m.onnx.profile.json"


def test_auto_exclude_leaves_a_ranking_with_the_layers_it_kept(tmp_path: Path) -> None:
    auto = {
        "excluded": ["/stem/Conv"],
        "ranking": [{"node": "/stem/Conv", "op_type": "Conv", "agreement": 0.6, "cosine_mean": 0.9}],
        "measured_on": "64 calibration inputs",
    }
    report = artifact_report(
        "m.onnx-int8.onnx", "onnx-int8", precision={"calibration": {"method": "entropy", "auto_exclude": auto}}
    )
    collector = Collector()
    collector.add_path(write(tmp_path, "m.onnx-int8.onnx.json", report))
    (ranking,) = collector.page().rankings
    assert ranking.excluded == ("/stem/Conv",) and ranking.method == "entropy"
    assert ranking.layers[0].agreement == 0.6


def test_an_engine_takes_the_model_from_the_report_of_its_onnx(tmp_path: Path) -> None:
    engine = engine_report("x.engine") | {"onnx_report": "/elsewhere/x.trt-fp16.onnx.json"}
    write(tmp_path, "x.trt-fp16.onnx.json", artifact_report("x.trt-fp16.onnx"))
    collector = Collector()
    collector.add_path(write(tmp_path, "x.engine.json", engine))
    page = collector.page()
    assert page.model["arch"] == MODEL["arch"] and page.io["inputs"][0]["name"] == "input"
    (target,) = page.targets
    assert target.simulated and target.kind == "engine" and target.tensorrt == "10.3.0.26 (simulated)"


def test_reports_of_two_models_are_noted(tmp_path: Path) -> None:
    other = artifact_report("b.onnx", model={**MODEL, "arch": "ghostnetv2_100"})
    collector = Collector()
    collector.add_path(write(tmp_path, "a.onnx.json", artifact_report("a.onnx")))
    collector.add_path(write(tmp_path, "b.onnx.json", other))
    assert collector.page().notes == ("b.onnx describes another model than a.onnx",)


def test_a_bundle_manifest_latency_summary_is_shown_without_queries(tmp_path: Path) -> None:
    write(tmp_path, "m.onnx.json", artifact_report("m.onnx"))
    manifest = {
        "model": MODEL,
        "artifacts": [
            {
                "file": "m.onnx",
                "report": "m.onnx.json",
                "target": "onnx",
                "latency": {"source": "m.onnx.profile.json", "summary": {"median": 1.5, "p99": 2.5}},
            }
        ],
        "files": [{"path": "m.onnx", "bytes": 4096}, {"path": "m.onnx.json", "bytes": 10}],
    }
    collector = Collector()
    collector.add_bundle("b.tar.gz", tmp_path, manifest)
    (target,) = collector.page().targets
    assert target.bytes == 4096 and target.origin == "b.tar.gz"
    assert target.profile is not None and target.profile.source == "bundle manifest (m.onnx.profile.json)"
    (run,) = target.profile.runs
    assert run.latency == {"median": 1.5, "p99": 2.5} and run.timed == ((), ())
