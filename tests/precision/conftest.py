"""Shared fixtures of the precision tests: the tiny trained GhostNet as FP32 ONNX, calibration inputs, ranges."""

from __future__ import annotations

from typing import Any

import pytest

PREPROCESSING = {"resize": 32, "crop": 32, "mean": (0.305,) * 3, "std": (0.323,) * 3}  # the fixture's own


@pytest.fixture(scope="session")
def tiny_ghostnet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tests/fixtures/ghostnet_025_digits32.pt exported to FP32 ONNX (batch 1), 32 calibration inputs from the
    shipped calibration split, and their min/max ranges."""
    import onnx

    from ghost_deploy.config import ExportConfig
    from ghost_deploy.data.inputs import ImageFolder
    from ghost_deploy.data.preprocess import Preprocessing
    from ghost_deploy.precision.calibrate import calibrate
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_onnx import export_model
    from tests.helpers import DIGITS, TINY_MODEL

    out = tmp_path_factory.mktemp("tiny_ghostnet") / "tiny.onnx"
    export_model(TINY_MODEL, ExportConfig(output=out, eval_limit=8), Steps(echo=lambda text: None))
    fp32 = onnx.load(str(out))
    samples = list(ImageFolder(DIGITS / "calibration", Preprocessing(**PREPROCESSING), limit=32))  # type: ignore[arg-type]
    ranges = calibrate(fp32, samples, method="minmax").ranges
    return {"path": out, "fp32": fp32, "samples": samples, "ranges": ranges}
