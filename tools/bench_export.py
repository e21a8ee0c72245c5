"""Benchmark of `ghost-export` on GhostNet-1.0x at 224x224: time of each step, ONNX Runtime CPU latency against
PyTorch eager latency, and the `ort-int8` Q/DQ model's latency against the FP32 ONNX's, each as a ratio from
interleaved runs in one process.

    python tools/bench_export.py [--width 1.0] [--size 224] [--runs 50] [--threads 2] [--calib-images 64]

The model has random weights with BatchNorm statistics measured on the shipped digit images (resized), and a
classifier scaled so the logits span several units, so the parity check means something. The ort-int8 model is
built as `ghost-export --target ort-int8 --calib-method minmax` builds it, from the shipped calibration images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import BatchSpec, ExportConfig
from ghost_deploy.data.inputs import ImageFolder
from ghost_deploy.data.preprocess import Preprocessing, preprocess_file
from ghost_deploy.model.checkpoint import save_checkpoint
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.model.synthetic import realistic_ghostnet
from ghost_deploy.precision.calibrate import calibrate
from ghost_deploy.precision.quantize import qdq_for_onnxruntime
from ghost_deploy.report import Steps
from ghost_deploy.stages.export_onnx import export_model

REPO = Path(__file__).resolve().parents[1]


def _images(count: int, size: int) -> np.ndarray:
    pre = Preprocessing(resize=size, crop=size)
    paths = sorted((REPO / "calibration" / "digits" / "calibration").rglob("*.png"))[:count]
    return np.stack([preprocess_file(p, pre) for p in paths])


def _interleaved(
    model: torch.nn.Module, runner: OnnxRuntimeRunner, x: np.ndarray, runs: int
) -> tuple[list[float], list[float]]:
    """Alternate PyTorch and ORT runs so both see the same machine state; returns latencies in ms."""
    xt = torch.from_numpy(x)
    t_torch, t_ort = [], []
    with torch.inference_mode():
        for _ in range(5):  # warm-up
            model(xt)
            runner.infer({"input": x})
        for _ in range(runs):
            start = time.perf_counter()
            model(xt)
            t_torch.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            runner.infer({"input": x})
            t_ort.append((time.perf_counter() - start) * 1e3)
    return t_torch, t_ort


# the target for ort-int8 on the CPU: at most this fraction of the FP32 ONNX latency
TARGET_INT8_RATIO = 0.75


def _ort_int8(fp32: Path, size: int, count: int) -> onnx.ModelProto:
    """The ort-int8 Q/DQ model: min/max ranges over `count` shipped calibration images, ONNX Runtime's layout."""
    model = onnx.load(str(fp32))
    samples = ImageFolder(REPO / "calibration" / "digits" / "calibration", Preprocessing(size, size), limit=count)
    calibration = calibrate(model, samples, method="minmax")
    quantized, _ = qdq_for_onnxruntime(model, calibration.ranges)
    return quantized


def _interleaved_ort(a: OnnxRuntimeRunner, b: OnnxRuntimeRunner, x: np.ndarray, runs: int) -> tuple[list[float], ...]:
    """Alternate two ORT sessions on the same input; returns both latencies in ms."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(5):  # warm-up
        a.infer({"input": x})
        b.infer({"input": x})
    for _ in range(runs):
        for runner, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            runner.infer({"input": x})
            out.append((time.perf_counter() - start) * 1e3)
    return times


def _print_int8(fp32: Path, images: np.ndarray, args: argparse.Namespace) -> None:
    """Build the ort-int8 model and print its latency against the FP32 ONNX's, batch 1 and 8."""
    start = time.perf_counter()
    int8 = _ort_int8(fp32, args.size, args.calib_images)
    ops = [n.op_type for n in int8.graph.node]
    print(
        f"  ort-int8: built in {time.perf_counter() - start:.1f} s (min/max calibration on {args.calib_images} "
        f"images), {ops.count('QuantizeLinear')} QuantizeLinear / {ops.count('DequantizeLinear')} DequantizeLinear"
    )
    runner_fp32 = OnnxRuntimeRunner(fp32, threads=args.threads, spin=False)
    runner_int8 = OnnxRuntimeRunner(int8.SerializeToString(), threads=args.threads, spin=False)
    with runner_fp32, runner_int8:
        for batch in (1, 8):
            x = np.ascontiguousarray(np.resize(images, (batch, 3, args.size, args.size)))
            t_fp32, t_int8 = _interleaved_ort(runner_fp32, runner_int8, x, args.runs)
            mf, mi = statistics.median(t_fp32), statistics.median(t_int8)
            # the 10th percentile is less sensitive than the median to other work on a shared machine
            p10 = float(np.percentile(t_int8, 10) / np.percentile(t_fp32, 10))
            verdict = "meets" if mi / mf <= TARGET_INT8_RATIO else "misses"
            print(
                f"  batch {batch}: ORT FP32 median {mf:.2f} ms, ort-int8 median {mi:.2f} ms, ratio int8/FP32 "
                f"{mi / mf:.2f} (10th percentiles: {p10:.2f}; {args.runs} interleaved runs; {verdict} the target "
                f"<= {TARGET_INT8_RATIO})"
            )


def main() -> None:
    """Run the benchmark and print the step times and the latency ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-images", type=int, default=64, help="calibration images for ort-int8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = _images(40, args.size)
    model = realistic_ghostnet(images[:32], width=args.width, num_classes=1000)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ghostnet.pt"
        info = ModelInfo(
            "ghostnet_100", args.width, 1000, args.size, Preprocessing(round(args.size * 256 / 224), args.size)
        )
        save_checkpoint(ckpt, model, info)
        steps = Steps(echo=lambda text: None)
        cfg = ExportConfig(output=Path(tmp) / "g.onnx", batch=BatchSpec(None, (1, 1, 8)))
        result = export_model(ckpt, cfg, steps)
        metrics = result.report["verification"]["metrics"]
        print(f"GhostNet {args.width}x at {args.size}x{args.size}, torch threads {args.threads}")
        for step in result.report["steps"]:
            print(f"  step {step['name']:<9} {step['seconds']:7.2f} s")
        print(
            f"  parity: max abs error {metrics['max_abs_error']:.2e}, logits up to {metrics['reference_max_abs']:.1f}"
        )
        runner = OnnxRuntimeRunner(result.artifact, threads=args.threads, spin=False)
        with runner:
            for batch in (1, 8):
                x = np.ascontiguousarray(np.resize(images, (batch, 3, args.size, args.size)))
                t_torch, t_ort = _interleaved(model, runner, x, args.runs)
                mt, mo = statistics.median(t_torch), statistics.median(t_ort)
                print(
                    f"  batch {batch}: PyTorch eager median {mt:.2f} ms, ONNX Runtime CPU median {mo:.2f} ms, "
                    f"ratio ORT/PyTorch {mo / mt:.2f} ({args.runs} interleaved runs)"
                )
        _print_int8(result.artifact, images, args)


if __name__ == "__main__":
    main()
