"""The page as a reader sees it: every section, figures that match the reports, "not measured", escaping."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghost_deploy.view.collect import Collector
from ghost_deploy.view.data import Page
from ghost_deploy.view.html import render_page
from tests.view.parsed import parse_page
from tests.view.samples import (
    artifact_report,
    check,
    engine_report,
    profile_report,
    sensitivity_report,
    write,
)

SECTIONS = ["verdict", "targets", "todo", "model", "classes", "latency", "layers", "sensitivity", "verification"]
LATENCIES = [1.0, 1.1, 1.2, 1.2, 1.3, 1.3, 1.3, 1.4, 1.5, 4.0] * 4


def _page(folder: Path, *reports: tuple[str, dict[str, object]]) -> Page:
    collector = Collector()
    for name, data in reports:
        collector.add_path(write(folder, name, data))
    return collector.page()


def test_every_section_holds_the_reports_figures(tmp_path: Path) -> None:
    fp32 = artifact_report("m.onnx", sha256="1" * 64)
    int8 = artifact_report(
        "m.onnx-int8.onnx", "onnx-int8", "2" * 64, precision_verification=check(top1=0.9777, agreement=0.9916)
    )
    page = _page(
        tmp_path,
        ("m.onnx.json", fp32),
        ("m.onnx-int8.onnx.json", int8),
        ("p.json", profile_report("m.onnx", "1" * 64, LATENCIES)),
        ("s.json", sensitivity_report([("/stem/Conv", 0.62), ("/blocks.0/Conv", 0.95), ("/blocks.1/Conv", 0.999)])),
    )
    html = render_page(page)
    seen = parse_page(html)
    assert list(seen.sections) == SECTIONS
    assert "ghostnet_050" in seen.sections["model"] and "0.305" in seen.sections["model"]
    assert "(p / 255 - mean[c]) / std[c]" in seen.sections["model"] and "1 x 3 x 64 x 64" in seen.sections["model"]
    assert seen.cells[("m.onnx", "top1")] == "98.61%"
    assert seen.cells[("m.onnx", "agreement")] == "100.00%"
    assert seen.cells[("m.onnx-int8.onnx", "top1")] == "97.77%"  # the INT8 preview's, not the FP32 check's
    assert seen.cells[("m.onnx-int8.onnx", "agreement")] == "99.16%"
    assert seen.cells[("m.onnx", "size")] == "1.23 MB"
    assert seen.cells[("m.onnx", "median")] == "1.300 ms" and seen.cells[("m.onnx", "p99")] == "4.000 ms"
    assert seen.cells[("m.onnx-int8.onnx", "median")] == "not measured"
    hist, trace = seen.charts["latency"]
    assert hist.counted == len(LATENCIES) and hist.marks == 2 and "median 1.300 ms" in hist.texts
    assert trace.points == len(LATENCIES) + 2  # timed queries and the two warm-up ones
    assert "/blocks.0/Conv" in seen.sections["layers"] and "/blocks.10/Conv" not in seen.sections["layers"]
    (ranking,) = seen.charts["sensitivity"]
    assert ranking.bars == 3 and "38.00" in ranking.texts  # 1 - 0.62 agreement, in points
    assert "98.61%" in seen.sections["verification"] and "PASSED" in seen.sections["verification"]
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_missing_pieces_say_not_measured(tmp_path: Path) -> None:
    bare = artifact_report("m.onnx")
    del bare["verification"], bare["model"], bare["io"], bare["preprocessing"]
    seen = parse_page(render_page(_page(tmp_path, ("m.onnx.json", bare))))
    assert list(seen.sections) == SECTIONS
    for field in ("top1", "agreement", "median", "p99", "throughput", "verdict"):
        assert seen.cells[("m.onnx", field)] == "not measured", field
    for section in ("verdict", "model", "classes", "latency", "layers", "sensitivity", "verification"):
        assert "not measured" in seen.sections[section], section
    assert not seen.charts


def test_a_failed_verification_names_the_first_diverging_node(tmp_path: Path) -> None:
    failed = check(agreement=0.59, failures=("top-1 agreement 59.00% < 99.00%",))
    failed["first_divergence"] = {"node": "/blocks.3/ghost2/Conv", "op_type": "Conv", "max_abs_error": 0.25}
    seen = parse_page(render_page(_page(tmp_path, ("m.onnx.json", artifact_report("m.onnx", verification=failed)))))
    assert seen.cells[("m.onnx", "verdict")] == "FAILED"
    text = seen.sections["verification"]
    assert "FAILED" in text and "top-1 agreement 59.00% < 99.00%" in text
    assert "First diverging node" in text and "/blocks.3/ghost2/Conv" in text and "0.25" in text


def test_simulated_figures_are_labelled(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        ("x.engine.json", engine_report("x.engine", "9" * 64)),
        ("x.engine.profile.json", profile_report("x.engine", "9" * 64, LATENCIES, simulated=True)),
    )
    html = render_page(page)
    seen = parse_page(html)
    assert page.simulated and "GHOST_DEPLOY_SIMULATE_TRT" in html
    assert "SIMULATED" in seen.cells[("x.engine", "median")] and "SIMULATED" in seen.cells[("x.engine", "throughput")]
    assert [("SIMULATED" in c.title) for c in seen.charts["latency"]] == [True, True]  # a chart may be seen alone
    for section in ("latency", "layers", "verification"):
        assert "SIMULATED" in seen.sections[section], section
    assert "10.3.0.26" not in seen.sections["model"]  # the engine's report describes no model
    assert "not measured" in seen.sections["model"]


def test_an_unsimulated_page_says_nothing_of_simulation(tmp_path: Path) -> None:
    html = render_page(_page(tmp_path, ("m.onnx.json", artifact_report("m.onnx"))))
    assert "SIMULATED" not in html


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.mark.parametrize(
    "where",
    ["arch", "label", "failure", "node", "tolerance", "file", "profile-node", "sensitivity-node", "backend"],
)
def test_every_string_from_a_report_is_escaped(tmp_path: Path, where: str) -> None:
    report = artifact_report("m.onnx", sha256="1" * 64)
    profile = profile_report("m.onnx", "1" * 64, LATENCIES)
    ranking = sensitivity_report([("/stem/Conv", 0.9)])
    if where == "arch":
        report["model"] = {**report["model"], "arch": HOSTILE}
    elif where == "label":
        report["model"] = {**report["model"], "labels": [HOSTILE]}
    elif where == "failure":
        report["verification"] = check(failures=(HOSTILE,))
        report["verification"]["first_divergence"] = {"node": HOSTILE}
    elif where == "tolerance":
        report["verification"]["tolerances"] = {HOSTILE: HOSTILE}
    elif where == "file":
        profile["artifact"] = {"path": f"/x/{HOSTILE}.onnx"}
    elif where == "profile-node":
        profile["results"][0]["layers"]["layers"][0]["onnx_nodes"] = [HOSTILE]
        profile["results"][0]["warnings"] = [HOSTILE]
    elif where == "sensitivity-node":
        ranking["sensitivity"]["layers"][0]["node"] = HOSTILE
    else:
        profile["backend"] = HOSTILE
        profile["environment"]["cpu"]["model"] = HOSTILE
    page = _page(tmp_path, ("m.onnx.json", report), ("p.json", profile), ("s.json", ranking))
    html = render_page(page)
    assert "<script" not in html and "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    seen = parse_page(html)
    assert seen.tags <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "code",
                         "span", "section", "table", "tr", "th", "td", "div", "svg", "rect", "line", "text", "circle",
                         "g", "ul", "ol", "li", "b", "br", "wbr"}  # fmt: skip
    assert not any(a.startswith(("onerror", "src", "href")) for a in seen.attributes)


def test_a_ranking_where_no_layer_costs_agreement_is_drawn_by_cosine(tmp_path: Path) -> None:
    ranking = sensitivity_report([("/stem/Conv", 1.0), ("/blocks.0/Conv", 1.0)])
    ranking["sensitivity"]["layers"][0]["cosine_mean"] = 0.998
    seen = parse_page(render_page(_page(tmp_path, ("s.json", ranking))))
    (chart,) = seen.charts["sensitivity"]
    assert chart.bars == 2 and "cosine distance" in chart.title
    assert "2.00e-03" in chart.texts  # 1 - 0.998


def test_an_onnx_profile_run_beside_the_simulator_is_not_labelled(tmp_path: Path) -> None:
    profile = profile_report("m.onnx", "1" * 64, LATENCIES, simulated=True) | {"kind": "onnx"}
    page = _page(tmp_path, ("m.onnx.json", artifact_report("m.onnx", sha256="1" * 64)), ("p.json", profile))
    assert not page.simulated and "SIMULATED" not in render_page(page)
