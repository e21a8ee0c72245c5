"""Test helpers: the shipped data's paths, real digit images, a CLI runner in a fresh process, a tiny ONNX model."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

    from ghost_deploy.config import ExportConfig

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "calibration" / "digits"
SHIPPED_MODEL = REPO / "models" / "ghostnet_digits.pt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def digit_images(count: int, size: int, split: str = "test") -> np.ndarray:
    """`count` shipped digit images preprocessed to size x size with ImageNet-style normalisation."""
    from ghost_deploy.data.preprocess import Preprocessing, preprocess_file

    pre = Preprocessing(resize=size, crop=size)
    paths = sorted((DIGITS / split).rglob("*.png"))[:count]
    assert paths, f"no shipped images under {DIGITS / split}"
    return np.stack([preprocess_file(p, pre) for p in paths])


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m ghost_deploy ARGS` (or `ghost-export ARGS` when it is named first) in a fresh process."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if args and args[0] == "ghost-export":
        cmd = [
            sys.executable,
            "-c",
            "import sys; from ghost_deploy.cli.main import export_main; sys.exit(export_main())",
            *args[1:],
        ]
    else:
        cmd = [sys.executable, "-m", "ghost_deploy", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600)


# A prelude that makes `import torch` (and onnxsim's optional use of it) fail, as on a device without the extra
NO_TORCH = "import sys; sys.modules['torch'] = None; "


def tiny_onnx(path: Path, batch: int | str = 1, size: int = 32, poison: float | None = None) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: an image classifier small enough to time quickly.

    `poison` replaces the classifier's weights of class 3 (NaN, Inf, 1e38: a broken checkpoint's logits).
    """
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    conv = rng.standard_normal(216)
    fc = rng.standard_normal(80).reshape(8, 10)
    if poison is not None:
        fc[:, 3] = poison
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], conv.tolist()),
        helper.make_tensor("fc", TensorProto.FLOAT, [8, 10], fc.ravel().tolist()),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv_out"], name="stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="stem/Relu"),
        helper.make_node("GlobalAveragePool", ["relu_out"], ["pool_out"], name="pool"),
        helper.make_node("Flatten", ["pool_out"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="classifier"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def exported(base: Path) -> dict[str, Path]:
    """The shipped model exported to FP32 ONNX and ort-int8 (small verification), once per test session."""
    out = base / "artifacts"
    paths = {"onnx": out / "digits.onnx", "ort-int8": out / "digits.ort-int8.onnx"}
    if all(p.with_name(p.name + ".json").is_file() for p in paths.values()):
        return paths
    out.mkdir(exist_ok=True)
    test_dir = str(REPO / "calibration" / "digits" / "test")
    for target, path in paths.items():
        proc = run_cli(
            "ghost-export", str(SHIPPED_MODEL), "--target", target, "-o", str(path),
            "--eval", test_dir, "--eval-limit", "16", "--calib-size", "32",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return paths


TINY_MODEL = FIXTURES / "ghostnet_025_digits32.pt"  # trained: tools/train_digits.py --width 0.25 --input-size 32


def small_export_config(target: str, output: Path, **changes: object) -> ExportConfig:
    """A quick export of TINY_MODEL: 32 test-split images to verify on, 16 calibration images, min/max ranges."""
    from ghost_deploy.config import ExportConfig, PrecisionConfig

    base = ExportConfig(
        target=target,
        output=output,
        eval_limit=32,
        calib_size=16,
        precision=PrecisionConfig(calib_method="minmax"),
        command=("pytest",),
    )
    return base.replace(**changes)


def trt_env(version: str = "10.3") -> dict[str, str]:
    """The environment that gives a CLI subprocess a TensorRT: the installed one, else the simulated `version`."""
    from ghost_deploy.machine import probe

    return {} if probe.distribution_version(*probe.TRT_DISTRIBUTIONS) else {"GHOST_DEPLOY_SIMULATE_TRT": version}


def simulated_if(env: dict[str, str]) -> contextlib.AbstractContextManager[object]:
    """In this process, the simulation `trt_env` asked a subprocess for (nothing when TensorRT is real)."""
    version = env.get("GHOST_DEPLOY_SIMULATE_TRT")
    if version is None:
        return contextlib.nullcontext()
    from ghost_deploy.testing import trtsim

    trtsim.uninstall()
    return trtsim.simulate(version)


def run_limited(
    code: str, *args: str, memory: int = 2 << 30, file_size: int | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -c code ARGS` under RLIMIT_AS = `memory` (and RLIMIT_FSIZE = `file_size`, SIGXFSZ ignored).

    Bounds are tested this way: if the code under test allocated what the input claims, the child fails (a
    MemoryError, an OSError EFBIG), never the test suite.
    """
    import resource
    import signal

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout, preexec_fn=limit,
    )  # fmt: skip


def gzip_of_zeros(prefix: bytes, zeros: int, suffix: bytes = b"") -> bytes:
    """A gzip stream of prefix + `zeros` zero bytes + suffix, built from concatenated members: cheap to make
    and small whatever `zeros` is (one compressed MiB of zeros, repeated)."""
    import gzip

    mib = gzip.compress(bytes(1 << 20), compresslevel=9)
    parts = [gzip.compress(prefix)] + [mib] * (zeros >> 20)
    if zeros & ((1 << 20) - 1):
        parts.append(gzip.compress(bytes(zeros & ((1 << 20) - 1))))
    return b"".join(parts) + gzip.compress(suffix)


def session_graph(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime runs (its basic and extended fusions applied: QLinear* ops, no NCHWc layout)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)
