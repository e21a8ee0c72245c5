"""`ghost-deploy verify` and `ghost-export` name the cosine they print (issue 18): the minimum and the mean per
sample, and which of them the gate judged (the INT8 gate the mean; before, the minimum was printed unnamed
while the INT8 gate judged the mean)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ghost_deploy
from ghost_deploy.cli.summary import summary
from ghost_deploy.report import Steps
from tests.helpers import TINY_MODEL, small_export_config

QUIET = Steps(echo=lambda text: None)


@pytest.mark.parametrize(
    ("target", "section", "starts", "judged", "limit"),
    [
        ("onnx-int8", "precision_verification", "onnx-int8 preview", "mean", "0.99"),  # the INT8 gate
        ("onnx", "verification", "verification ", "min", "0.9999"),  # the FP32 gate
    ],
)
@pytest.mark.slow
def test_the_summary_names_both_cosines_and_the_one_the_gate_judges(
    target: str, section: str, starts: str, judged: str, limit: str, tmp_path: Path
) -> None:
    result = ghost_deploy.export(TINY_MODEL, small_export_config(target, tmp_path / "m.onnx"), QUIET)
    metrics = result.report[section]["metrics"]
    line = next(x for x in summary(result.report).splitlines() if x.startswith(starts))
    shown = re.search(r"cosine min (\S+), mean (\S+) \(gate: (\w+) >= (\S+)\)", line)
    assert shown is not None, line
    assert float(shown[1]) == pytest.approx(metrics["cosine_min"], abs=1e-6)
    assert float(shown[2]) == pytest.approx(metrics["cosine_mean"], abs=1e-6)
    assert (shown[3], shown[4]) == (judged, limit)


def test_an_ungated_cosine_says_so() -> None:
    report = {
        "verification": {
            "passed": True,
            "failures": [],
            "data": {"kind": "images"},
            "metrics": {"samples": 4, "max_abs_error": 0.1, "cosine_min": 0.5, "cosine_mean": 0.75},
            "tolerances": {"cosine_of": "min", "min_cosine": None},
        }
    }
    report["verification"]["metrics"]["top1_agreement"] = 1.0  # type: ignore[index]
    assert "cosine min 0.500000, mean 0.750000 (cosine not gated)" in summary(report)
