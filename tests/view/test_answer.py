"""The page answers first: which target to use and at what cost, what failed, what each row is, and how to
measure what is missing, with the names of real files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from ghost_deploy.view.collect import Collector
from ghost_deploy.view.html import render_page
from tests.view.parsed import ParsedPage, parse_page
from tests.view.samples import artifact_report, check, engine_report, profile_report, write

FAST, SLOW = [1.0] * 20, [2.0] * 20


def _seen(
    folder: Path, *reports: tuple[str, dict[str, Any]], profiles: dict[str, list[float]] | None = None
) -> ParsedPage:
    """Write the reports (and `<name>.profile.json` beside them), give them to the page by artifact name."""
    collector = Collector()
    for name, data in reports:
        path = write(folder, name + ".json", data)
        if name in (profiles or {}):
            sha = data.get("artifact", {}).get("sha256", "")
            write(folder, name + ".profile.json", profile_report(name, sha, (profiles or {})[name]))
        collector.add_path(path)
    return parse_page(render_page(collector.page()))


def _int8(name: str, sha: str, **extra: Any) -> dict[str, Any]:
    report = artifact_report(name, "onnx-int8", sha, precision_verification=check(top1=0.9805, agreement=0.997))
    report["artifact"]["bytes"] = 308_642  # a quarter of FP32's 1_234_567
    report.update(extra)
    return report


def _failed(name: str) -> dict[str, Any]:
    failures = ("mean cosine similarity 0.593482 < 0.99", "top-1 agreement 59.05% < 95.00%")
    preview = check(top1=0.58, agreement=0.5905, failures=failures)
    preview["first_divergence"] = {"node": "/conv_stem/Conv", "op_type": "Conv", "cosine_mean": 0.957}
    return artifact_report(name, "onnx-int8", "f" * 64, precision_verification=preview, status="verification_failed")


def test_the_verdict_names_the_fastest_target_that_passed_its_speedup_size_and_what_failed(tmp_path: Path) -> None:
    seen = _seen(
        tmp_path,
        ("m.onnx", artifact_report("m.onnx", sha256="1" * 64)),
        ("m.onnx-int8.onnx", _int8("m.onnx-int8.onnx", "2" * 64)),
        ("m.onnx-int8.failed.onnx", _failed("m.onnx-int8.failed.onnx")),
        profiles={"m.onnx": SLOW, "m.onnx-int8.onnx": FAST, "m.onnx-int8.failed.onnx": [0.5] * 20},
    )
    verdict = seen.sections["verdict"]
    fastest = verdict.split("Failed")[0]
    assert "Fastest target that passed: m.onnx-int8.onnx (onnx-int8)" in fastest
    assert "2.00x the speed of FP32 (median 1.000 ms against 2.000 ms, batch 1)" in fastest
    assert "0.25x its size (0.31 MB against 1.23 MB)" in fastest and "top-1 98.05% (FP32 98.61%)" in fastest
    assert "failed" not in fastest  # faster still, but it failed its gate
    failed = verdict.split("Failed")[1]
    assert "m.onnx-int8.failed.onnx" in failed and "mean cosine similarity 0.593482 < 0.99" in failed
    assert "first diverging node conv_stem/Conv" in failed
    assert seen.cells[("m.onnx-int8.onnx", "speedup")] == "2.00x"
    assert seen.cells[("m.onnx-int8.onnx", "size_ratio")] == "0.25x"
    assert seen.cells[("m.onnx", "speedup")] == "1.00x (itself)"


def test_a_simulated_engine_latency_is_never_the_fastest(tmp_path: Path) -> None:
    engine = engine_report("m.trt-fp16.engine", "9" * 64)
    collector = Collector()
    write(tmp_path, "m.onnx.profile.json", profile_report("m.onnx", "1" * 64, SLOW))
    collector.add_path(write(tmp_path, "m.onnx.json", artifact_report("m.onnx", sha256="1" * 64)))
    collector.add_path(write(tmp_path, "m.trt-fp16.engine.json", engine))
    collector.add_path(write(tmp_path, "p.json", profile_report("m.trt-fp16.engine", "9" * 64, FAST, simulated=True)))
    verdict = parse_page(render_page(collector.page())).sections["verdict"]
    assert "Fastest target that passed: the FP32 ONNX m.onnx" in verdict
    assert 'Left out of "fastest": m.trt-fp16.engine (trt-fp16), whose latency is SIMULATED' in verdict


def _real_engine(name: str, target: str, sha: str) -> dict[str, Any]:
    report = engine_report(name, sha) | {"target": target, "simulated": False}
    report["engine"]["simulated"] = False
    return report


def test_an_engine_is_timed_against_the_fp32_engine_else_says_the_runtimes_differ(tmp_path: Path) -> None:
    def profile(name: str, sha: str, latencies: list[float]) -> dict[str, Any]:
        return profile_report(name, sha, latencies) | {"backend": "tensorrt"}

    collector = Collector()
    write(tmp_path, "m.onnx.profile.json", profile_report("m.onnx", "1" * 64, [4.0] * 20))
    collector.add_path(write(tmp_path, "m.onnx.json", artifact_report("m.onnx", sha256="1" * 64)))
    collector.add_path(write(tmp_path, "f.engine.json", _real_engine("f.engine", "trt-fp16", "9" * 64)))
    collector.add_path(write(tmp_path, "p.json", profile("f.engine", "9" * 64, FAST)))
    alone = collector.page()
    verdict = parse_page(render_page(alone)).sections["verdict"]
    assert "f.engine (trt-fp16): 4.00x the speed of FP32 (median 1.000 ms against 4.000 ms, batch 1; tensorrt " in (
        verdict
    )
    assert "against onnxruntime)" in verdict
    collector.add_path(write(tmp_path, "e.engine.json", _real_engine("e.engine", "trt-fp32", "8" * 64)))
    collector.add_path(write(tmp_path, "q.json", profile("e.engine", "8" * 64, SLOW)))
    seen = parse_page(render_page(collector.page()))
    assert "2.00x the speed of the FP32 engine (median 1.000 ms against 2.000 ms, batch 1)" in seen.sections["verdict"]
    assert seen.cells[("f.engine", "speedup")] == "2.00x" and seen.cells[("e.engine", "speedup")] == "1.00x (itself)"


def test_without_profiles_the_verdict_says_not_measured_and_what_passed(tmp_path: Path) -> None:
    seen = _seen(
        tmp_path, ("m.onnx", artifact_report("m.onnx")), ("m.onnx-int8.onnx", _int8("m.onnx-int8.onnx", "2" * 64))
    )
    verdict = seen.sections["verdict"]
    assert "Fastest target that passed: not measured (no passing target was profiled" in verdict
    assert "Passed: m.onnx (onnx), m.onnx-int8.onnx (onnx-int8)" in verdict and "Failed: none." in verdict
    assert "Smallest target that passed: m.onnx-int8.onnx (onnx-int8): 0.25x the size of FP32" in verdict


def test_the_quantized_column_reads_the_new_key_and_falls_back_to_the_node_count(tmp_path: Path) -> None:
    full = {"by_op_type": {"Conv": [94, 95], "Gemm": [1, 1]}, "macs_quantized": 97, "macs_total": 100,
            "fraction_macs": 0.97, "mostly_float": False}  # fmt: skip
    hardly = {"by_op_type": {"Conv": [0, 95], "Gemm": [1, 1]}, "macs_quantized": 1, "macs_total": 100,
              "fraction_macs": 0.01, "mostly_float": True}  # fmt: skip
    seen = _seen(
        tmp_path,
        ("m.onnx", artifact_report("m.onnx")),
        ("a.onnx", _int8("a.onnx", "2" * 64, precision={"quantized": full, "qdq": {"quantized_nodes": 96}})),
        ("b.onnx", _int8("b.onnx", "3" * 64, precision={"quantized": hardly})),
        ("c.onnx", _int8("c.onnx", "4" * 64, precision={"qdq": {"quantized_nodes": 96}})),
        ("d.onnx", _int8("d.onnx", "5" * 64)),
    )
    assert seen.cells[("a.onnx", "quantized")] == "94/95 Conv, 1/1 Gemm; 97% of MACs"
    assert seen.cells[("b.onnx", "quantized")] == "0/95 Conv, 1/1 Gemm; 1% of MACs MOSTLY FLOAT"
    assert seen.cells[("c.onnx", "quantized")] == "96 nodes"
    assert seen.cells[("d.onnx", "quantized")] == "not measured"  # an INT8 target that says nothing of it
    assert seen.cells[("m.onnx", "quantized")] == "none"


def test_build_intermediates_and_failed_runs_are_set_apart(tmp_path: Path) -> None:
    engine = engine_report("m.trt-fp16.engine") | {"onnx": {"path": "/elsewhere/m.trt-fp16.build.onnx"}}
    seen = _seen(
        tmp_path,
        ("m.onnx", artifact_report("m.onnx")),
        ("m.trt-fp16.build.onnx", artifact_report("m.trt-fp16.build.onnx", sha256="2" * 64)),
        ("m.trt-fp16.engine", engine),
        ("m.onnx-int8.failed.onnx", _failed("m.onnx-int8.failed.onnx")),
    )
    roles = {r.attrs["data-file"]: r.attrs["data-role"] for r in seen.rows_in("targets") if "data-file" in r.attrs}
    assert roles == {
        "m.onnx": "target",
        "m.trt-fp16.engine": "target",
        "m.trt-fp16.build.onnx": "build",
        "m.onnx-int8.failed.onnx": "failed",
    }
    targets = seen.sections["targets"]
    assert targets.index("Build intermediates") < targets.index("m.trt-fp16.build.onnx") < targets.index("Failed runs")
    assert "build input of m.trt-fp16.engine" in targets
    assert targets.index("Failed runs") < targets.index("m.onnx-int8.failed.onnx")
    assert seen.cells[("m.onnx-int8.failed.onnx", "verdict")] == "FAILED"


def test_a_file_verified_against_itself_is_not_shown_as_a_check(tmp_path: Path) -> None:
    itself = check()
    itself.update(reference="onnxruntime (CPU)", candidate="onnxruntime (CPU)")
    itself["metrics"] |= {"max_abs_error": 0.0, "top1_agreement": 1.0}
    seen = _seen(
        tmp_path,
        ("m.simplified.onnx", artifact_report("m.simplified.onnx", verification=itself)),
        ("m.onnx-int8.onnx", _int8("m.onnx-int8.onnx", "2" * 64, verification=itself)),
    )
    text = seen.sections["verification"]
    assert text.count("Not shown: verification") == 2 and "reference: onnxruntime (CPU)" not in text
    assert seen.cells[("m.simplified.onnx", "agreement")] == "not measured"  # no agreement of a file with itself
    assert seen.cells[("m.simplified.onnx", "verdict")] == "PASSED (same graph as its source)"
    assert seen.cells[("m.onnx-int8.onnx", "agreement")] == "99.70%"  # its preview against FP32 still speaks


PLACEHOLDER = re.compile(r"\b(ARTIFACT|MODEL|FILE|DIR|PATH|BUNDLE)\b|<[a-z]+>|\.\.\.")


def test_one_list_of_commands_fills_what_is_not_measured_with_real_names(tmp_path: Path) -> None:
    engine = engine_report("m.trt-fp16.engine") | {"build_script": "/elsewhere/m.trt-fp16.engine.build.sh"}
    engine["engine"] = {"path": "/elsewhere/m.trt-fp16.engine", "built": False, "why_not": "TensorRT is not installed"}
    del engine["verification"]
    int8 = _int8("m.onnx-int8.onnx", "2" * 64, calibration_data={"path": "/data/calib images", "used": 16})
    seen = _seen(
        tmp_path,
        ("m.onnx", artifact_report("m.onnx", sha256="1" * 64)),
        ("m.onnx-int8.onnx", int8),
        ("m.trt-fp16.engine", engine),
        profiles={"m.onnx": SLOW},
    )
    d = tmp_path
    assert seen.commands == [
        f"ghost-deploy profile {d}/m.onnx-int8.onnx",
        f"bash {d}/m.trt-fp16.engine.build.sh",
        f"ghost-deploy profile {d}/m.trt-fp16.engine",
        f"ghost-deploy sensitivity {d}/m.onnx --target onnx-int8 --calib '/data/calib images' "
        f"-o {d}/m.sensitivity.json",
        f"ghost-deploy report {d}/m.onnx.json {d}/m.onnx-int8.onnx.json {d}/m.trt-fp16.engine.json "
        f"{d}/m.sensitivity.json -o report.html",
    ]
    assert shlex.split(seen.commands[3])[6] == "/data/calib images"  # quoted for the shell
    assert not PLACEHOLDER.search(seen.sections["todo"]), seen.sections["todo"]
    for section, text in seen.sections.items():
        assert not re.search(r"\b(ARTIFACT|MODEL|FILE|DIR|PATH|BUNDLE)\b", text), section


def test_nothing_missing_lists_no_command(tmp_path: Path) -> None:
    seen = _seen(tmp_path, ("m.onnx", artifact_report("m.onnx", sha256="1" * 64)), profiles={"m.onnx": SLOW})
    assert seen.commands == [] and "Nothing: every figure this page can show was measured." in seen.sections["todo"]


def test_top1_without_labels_is_asked_for_in_words_not_with_a_placeholder(tmp_path: Path) -> None:
    report = artifact_report("m.onnx", sha256="1" * 64)
    for key in ("reference_top1", "candidate_top1"):
        del report["verification"]["metrics"][key]
    seen = _seen(tmp_path, ("m.onnx", report), profiles={"m.onnx": SLOW})
    assert seen.commands == []
    assert "give ghost-export --eval a folder with one sub-folder per class" in seen.sections["todo"]


def test_an_accuracy_command_repeats_the_export_with_its_own_flags(tmp_path: Path) -> None:
    """The command that would measure a target's top-1 is that target's own export (its input size, labels,
    calibration and limits) with --eval added; a rebuilt command would assume 224 px and no labels."""
    fp32 = check()
    fp32["data"] = {"kind": "user", "what": "the user's --eval folder", "root": "/data/eval", "images": 60}
    fp32["metrics"] |= {
        "per_class": {"samples": [15] * 4, "reference_correct": [15] * 4, "candidate_correct": [15] * 4}
    }
    int8 = check()
    for key in ("reference_top1", "candidate_top1"):
        del int8["metrics"][key]
    command = ["ghost-export", "own.pt", "--input-size", "128", "--labels", "labels.txt", "--target", "onnx-int8",
               "--calib", "calib", "--int8-min-cosine", "0.97", "--eval", "other", "-o", "own.i8.onnx"]  # fmt: skip
    report = artifact_report("own.i8.onnx", "onnx-int8", "2" * 64, precision_verification=int8, command=command)
    seen = _seen(tmp_path, ("own.onnx", artifact_report("own.onnx", verification=fp32)), ("own.i8.onnx", report))
    wanted = [*command[:-4], "-o", "own.i8.onnx", "--eval", "/data/eval"]
    assert shlex.join(wanted) in seen.commands
