"""Verification records as a person reads them: metrics in words beside their limits, the missed one in red, and
where a failed preview first departs from FP32."""

from __future__ import annotations

from pathlib import Path

from ghost_deploy.view.collect import Collector
from ghost_deploy.view.html import render_page
from tests.view.parsed import ParsedPage, parse_page
from tests.view.samples import artifact_report, check, write


def _seen(folder: Path, preview: dict[str, object]) -> ParsedPage:
    collector = Collector()
    report = artifact_report("m.onnx-int8.onnx", "onnx-int8", precision_verification=preview)
    collector.add_path(write(folder, "m.onnx-int8.onnx.json", report))
    return parse_page(render_page(collector.page()))


def _failed_preview() -> dict[str, object]:
    preview = check(top1=0.9861, agreement=1.0, failures=("mean cosine similarity 0.979623 < 0.99",))
    preview["metrics"] |= {"cosine_mean": 0.979623, "cosine_min": 0.91, "reference_max_abs": 4.87}
    preview["tolerances"] = {"max_abs": None, "rtol": 0.0, "min_cosine": 0.99, "cosine_of": "mean",
                             "min_agreement": 0.95, "max_accuracy_drop": 0.01, "max_latency_ms": 3}  # fmt: skip
    return preview


def test_the_missed_metric_row_is_red_and_every_metric_is_named_in_words(tmp_path: Path) -> None:
    seen = _seen(tmp_path, _failed_preview())
    rows = {r.attrs["data-metric"]: r for r in seen.rows_in("verification") if "data-metric" in r.attrs}
    red = [key for key, row in rows.items() if row.attrs.get("class") == "failed"]
    assert red == ["cosine_mean"]  # not the worst-input cosine, which no limit judges here
    cosine = rows["cosine_mean"]
    # columns: the FP32 verification, then the preview
    assert cosine.cells == ["cosine similarity of the logits, mean over inputs", "0.999999", "0.979623 (limit >= 0.99)"]
    assert rows["top1_agreement"].cells[2] == "100.00% (limit >= 95.00%)"  # met: not red
    text = seen.sections["verification"]
    for raw in ("cosine_of", "reference_max_abs", "cosine_mean", "top1_agreement", "min_agreement"):
        assert raw not in text, raw
    assert "largest absolute logit of the reference" in text
    assert "Other limits: precision preview: max latency ms 3." in text  # a limit the page does not know yet


def test_a_passed_record_marks_nothing_red(tmp_path: Path) -> None:
    preview = _failed_preview() | {"passed": True, "failures": []}
    preview["tolerances"] |= {"min_cosine": 0.97}  # type: ignore[operator]
    seen = _seen(tmp_path, preview)
    assert not [r for r in seen.rows_in("verification") if r.attrs.get("class") == "failed"]


def test_a_failed_preview_shows_its_first_diverging_node_in_words(tmp_path: Path) -> None:
    preview = _failed_preview()
    preview["first_divergence"] = {"node": "/conv_stem/Conv", "op_type": "Conv", "max_abs_error": 2.33,
                                   "reference_max_abs": 4.15, "compared_nodes": 1, "cosine_mean": 0.957132,
                                   "min_cosine": 0.99, "samples": 8}  # fmt: skip
    text = _seen(tmp_path, preview).sections["verification"]
    assert (
        "First diverging node (precision preview): /conv_stem/Conv (Conv); largest absolute difference 2.33, largest "
        "absolute FP32 value 4.15, nodes compared up to it 1, cosine similarity with FP32 0.957132, limit 0.99, "
        "inputs 8" in text
    )
    assert "not located" not in text


def test_a_preview_where_no_node_falls_below_the_limit_says_so(tmp_path: Path) -> None:
    preview = _failed_preview()
    preview["first_divergence"] = {"node": None, "min_cosine": 0.99, "note": "no node's output fell below cosine 0.99"}
    text = _seen(tmp_path, preview).sections["verification"]
    assert "First diverging node (precision preview): none found (no node's output fell below cosine 0.99)." in text
