"""Shared fixtures (small realistic GhostNets, checkpoints) and the one hook for the machine markers.

Markers (pyproject.toml): `tensorrt` and `gpu` need a real TensorRT / a CUDA GPU and are skipped with the
reason where absent; `no_tensorrt` and `no_gpu` check what a machine without them does, and are skipped where
they are present. Every test module is collected everywhere: none imports tensorrt at top level.
"""

from __future__ import annotations

import os
from pathlib import Path

# pytest-xdist runs a worker per core: each worker's PyTorch on one thread. Two OpenMP pools spinning on two
# cores made a test of 2 s alone take 70 s in the suite (test_reparameterize_returns_a_fused_copy...).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from ghost_deploy.machine import probe
from tests.helpers import digit_images


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip each marked test whose machine requirement this machine does not meet, saying why."""
    has_trt = probe.tensorrt_installed()
    has_gpu = bool(probe.gpus() or probe.jetson())
    rules = {
        "tensorrt": (not has_trt, "needs TensorRT, which is not installed on this machine"),
        "gpu": (not has_gpu, "needs a CUDA GPU; this machine has none"),
        "no_tensorrt": (has_trt, "TensorRT is installed here: this test checks a machine without it"),
        "no_gpu": (has_gpu, "this machine has a GPU: this test checks a machine without one"),
    }
    for item in items:
        for marker, (skip, reason) in rules.items():
            if skip and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _own_engine_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own engine cache (subprocesses too): none writes to the user's ~/.cache, and none
    finds another test's engines."""
    monkeypatch.setenv("GHOST_DEPLOY_ENGINE_CACHE", str(tmp_path_factory.mktemp("engine-cache")))


@pytest.fixture(scope="session")
def small_model():  # type: ignore[no-untyped-def]
    """A ghostnet_050 for 10 classes at 64x64 with BN statistics from real images."""
    from ghost_deploy.model.synthetic import realistic_ghostnet

    return realistic_ghostnet(digit_images(48, 64), width=0.5, num_classes=10, seed=1)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory, small_model) -> Path:  # type: ignore[no-untyped-def]
    """`small_model` saved as a bare state_dict (no metadata)."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    torch.save(small_model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny classifier exported with its report ('good'), and its twin whose class 3 weights are NaN,
    exported with allow_nonfinite_weights: it fails its gate and lands at the failed name ('failed')."""
    from ghost_deploy.config import ExportConfig
    from ghost_deploy.errors import VerificationFailed
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_onnx import export_model
    from tests.helpers import tiny_onnx

    folder = tmp_path_factory.mktemp("tiny")
    quiet = Steps(echo=lambda text: None)
    good = export_model(tiny_onnx(folder / "src.onnx"), ExportConfig(output=folder / "tiny.onnx", eval_limit=8), quiet)
    nan_src = tiny_onnx(folder / "nan_src.onnx", poison=float("nan"))
    cfg = ExportConfig(output=folder / "nan.onnx", eval_limit=8, allow_nonfinite_weights=True)
    with pytest.raises(VerificationFailed) as failed:
        export_model(nan_src, cfg, quiet)
    return {"good": good.artifact, "failed": failed.value.result.artifact}  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_exports: dict[str, Path]) -> Path:
    """A directory bundle of the tiny classifier (32 x 32 input, 10 classes)."""
    from ghost_deploy.bundle.pack import pack

    out = tmp_path_factory.mktemp("tinybundle") / "b"
    pack([tiny_exports["good"]], out)
    return out
