"""The source stage's FP32 verification: the PyTorch reference at its own large batch, threads sized once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ghost_deploy.backends.base import TensorSpec
from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.backends.pytorch import TorchRunner
from ghost_deploy.config import BatchSpec, ExportConfig, Tolerances
from ghost_deploy.data.inputs import Sample, batches
from ghost_deploy.machine.cpu import usable_cpus
from ghost_deploy.report import Steps
from ghost_deploy.stages.source import (
    REFERENCE_BATCH,
    compare_with_reference,
    open_source,
    reference_batch,
    verify_fp32,
)
from ghost_deploy.verify import compare_runners
from tests.helpers import digit_images


class _Counting(TorchRunner):
    """The real PyTorch runner, noting the batch sizes it was given."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__(module, TensorSpec("input", (None, 3, 64, 64)))
        self.rows: list[int] = []

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows.append(len(feeds["input"]))
        return super().infer(feeds)


@pytest.mark.slow
def test_a_batch_1_onnx_is_checked_against_pytorch_at_a_large_batch(small_model: torch.nn.Module) -> None:
    samples = [Sample(x, i % 10, str(i)) for i, x in enumerate(digit_images(70, 64))]
    fixed = onnx_from_module(small_model, 64, BatchSpec(fixed=1))
    reference = _Counting(small_model)
    with reference, OnnxRuntimeRunner(fixed.SerializeToString()) as candidate:
        metrics = compare_with_reference(reference, candidate, samples, 1)
        plain = TorchRunner(small_model, reference.input_specs()[0])
        one_by_one = compare_runners(plain, candidate, batches(samples, "input", 1))
    assert reference.rows == [REFERENCE_BATCH, 70 - REFERENCE_BATCH]  # not 70 batches of one
    assert metrics["samples"] == 70 and metrics["top1_agreement"] == 1.0
    assert metrics["labelled_samples"] == one_by_one["labelled_samples"] == 70
    assert metrics["max_abs_error"] < 1e-4 and abs(metrics["max_abs_error"] - one_by_one["max_abs_error"]) < 1e-5


def test_large_images_take_smaller_reference_batches() -> None:
    assert reference_batch((None, 3, 64, 64)) == REFERENCE_BATCH
    assert reference_batch((None, 3, 224, 224)) == 5  # 64 rows at 224 would add ~600 MB of activations
    assert reference_batch((None, 3, 1024, 1024)) == 1


@pytest.mark.slow
def test_the_job_sizes_threads_once_and_gives_pytorch_its_count_back(small_checkpoint: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    cfg = ExportConfig(output=tmp_path / "s.onnx", eval_limit=20)
    source = open_source(small_checkpoint, cfg, Steps(echo=lambda text: None))
    record = verify_fp32(source, Tolerances(), Steps(echo=lambda text: None))
    assert record["passed"] and source.fp32_outputs is not None
    assert source.fp32_outputs.count == record["metrics"]["samples"]
    assert source.threads is not None and 1 <= source.threads <= usable_cpus()
    assert source.facts["threads"]["used"] == source.threads
    assert torch.get_num_threads() == before
