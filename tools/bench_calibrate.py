"""Benchmark of calibration on GhostNet-1.0x at 224x224: the peak memory of the WHOLE `ghost-export` process
(`ghost-export g100.onnx --target onnx-int8 --calib DIR --calib-size N`, the default minmax ranges), and the
peak memory and time of our streaming entropy calibrator against ONNX Runtime's `quantize_static` and NVIDIA
ModelOpt, each run in its own fresh process.

    python tools/bench_calibrate.py [--sizes 128,512] [--ort-sizes 32,128] [--skip-ort] [--width 1.0] [--size 224]

The model has random weights with BatchNorm statistics measured on the shipped digit images; it is exported and
simplified to an FP32 ONNX file first (this process imports torch). The export rows run `ghost-export`'s own
entry point in a fresh interpreter and read its VmHWM at exit: Python, every import, the model copies, the
sessions, the images, the calibration and the verification. The other children never import torch, so their
peak RSS is the calibrator's alone. The images are the shipped digits (all splits, 1797) in a seeded order,
preprocessed to the model's size (written as image files for the export rows); past 1797 they repeat, each
repeat shifted by up to 4 px (at the model's resolution: a digit is only 8 x 8 pixels) with a seeded RNG.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ghost_deploy.data.inputs import Sample
from ghost_deploy.data.preprocess import IMAGE_SUFFIXES, Preprocessing, load_rgb, preprocess_image

REPO = Path(__file__).resolve().parents[1]

DIGITS = REPO / "calibration" / "digits"
MAX_JITTER = 4  # pixels, at the model's input resolution
CHILD_TIMEOUT_S = 600
MODELOPT_HINT = "not installed (pip install torch==2.13.0 'nvidia-modelopt[onnx]' in its own venv)"
# The targets for our calibrator
TARGET_PEAK_MB = 600.0
TARGET_GROWTH = 1.10
TARGET_MS_PER_IMAGE = 60.0


def digit_paths(seed: int = 0) -> list[Path]:
    """Every shipped digit image (train, calibration and test), in a seeded random order."""
    paths = sorted(p for p in DIGITS.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    random.Random(seed).shuffle(paths)
    return paths


def digit_samples(count: int, size: int, seed: int = 0) -> Iterator[Sample]:
    """`count` preprocessed digits, made one at a time; repeats past the 1797 images are shifted at random."""
    pre = Preprocessing(resize=size, crop=size)
    paths = digit_paths(seed)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = paths[i % len(paths)]
        img = load_rgb(path)
        if i >= len(paths):
            img = _shifted(img.resize((size, size), _bilinear()), rng)
        yield Sample(preprocess_image(img, pre), None, f"{path.name}#{i // len(paths)}")


def _bilinear() -> Any:
    from PIL import Image

    return Image.Resampling.BILINEAR


def _shifted(img: Any, rng: np.random.Generator) -> Any:
    """The image moved by up to MAX_JITTER pixels each way, the uncovered border filled with black."""
    from PIL import Image

    dx, dy = (int(v) for v in rng.integers(-MAX_JITTER, MAX_JITTER + 1, size=2))
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy), fillcolor=(0, 0, 0))


def _peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MB of this process (VmHWM), or of its waited-for children (ru_maxrss).

    Linux carries ru_maxrss across fork and exec, so a child's own RUSAGE_SELF starts at its parent's peak;
    VmHWM belongs to the process's address space, which exec replaces. ru_maxrss is in KiB on Linux.
    """
    status = Path("/proc/self/status")
    if who == resource.RUSAGE_SELF and status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(who).ru_maxrss / 1024.0


# ---------------------------------------------------------------- children (no torch)


def child_ours(onnx_path: Path, count: int, size: int, out: Path) -> dict[str, Any]:
    """Our streaming entropy calibration of `count` images."""
    import onnx

    from ghost_deploy.precision.calibrate import calibrate

    model = onnx.load(str(onnx_path))
    before = _peak_mb()
    start = time.perf_counter()
    result = calibrate(model, digit_samples(count, size), method="entropy")
    wall = time.perf_counter() - start
    return {"images": result.images, "tensors": len(result.ranges), "wall_s": wall, "before_mb": before}


def child_forward(onnx_path: Path, count: int, size: int, out: Path) -> dict[str, Any]:
    """The FP32 forward pass alone over the same images, as calibrate runs it: the floor of any calibrator's time."""
    import onnx

    from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
    from ghost_deploy.data.inputs import batches

    runner = OnnxRuntimeRunner(onnx.load(str(onnx_path)).SerializeToString(), optimize=False)
    before = _peak_mb()
    start = time.perf_counter()
    with runner:
        for batch in batches(digit_samples(count, size), "input", 8, pad=False):
            runner.infer(batch.feeds)
    return {"images": count, "wall_s": time.perf_counter() - start, "before_mb": before}


def child_ort(onnx_path: Path, count: int, size: int, out: Path) -> dict[str, Any]:
    """ONNX Runtime's quantize_static with its Entropy calibrator (which keeps every activation of every image)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    from ghost_deploy.data.inputs import batches

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = (b.feeds for b in batches(digit_samples(count, size), "input", 8, pad=False))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    start = time.perf_counter()
    quantize_static(
        str(onnx_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        calibrate_method=CalibrationMethod.Entropy,
    )
    return {"images": count, "wall_s": time.perf_counter() - start}


def child_modelopt(onnx_path: Path, count: int, size: int, out: Path) -> dict[str, Any]:
    """`python -m modelopt.onnx.quantization` in a grandchild, whose peak RSS alone is read (RUSAGE_CHILDREN)."""
    data = out.with_suffix(".npy")
    with data.open("wb") as f:  # written image by image: this wrapper stays small
        header = {"descr": "<f4", "fortran_order": False, "shape": (count, 3, size, size)}
        np.lib.format.write_array_header_1_0(f, header)
        for sample in digit_samples(count, size):
            f.write(np.ascontiguousarray(sample.array, dtype="<f4").tobytes())
    cmd = [
        sys.executable,
        "-m",
        "modelopt.onnx.quantization",
        f"--onnx_path={onnx_path}",
        "--quantize_mode=int8",
        "--calibration_method=entropy",
        f"--calibration_data_path={data}",
        "--calibration_eps",
        "cpu",
        "--high_precision_dtype=fp32",
        f"--output_path={out}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"modelopt exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return {"images": count, "wall_s": wall, "peak_mb": _peak_mb(resource.RUSAGE_CHILDREN)}


def child_export(onnx_path: Path, count: int, size: int, out: Path) -> dict[str, Any]:
    """`ghost-export ONNX --target onnx-int8 --calib DIR --calib-size COUNT`, the whole job, in this process."""
    from ghost_deploy.cli.main import export_main

    calib = out.with_suffix(".calib")
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the summary; stdout carries this child's JSON
        code = export_main(
            [str(onnx_path), "--target", "onnx-int8", "--calib", str(calib), "--calib-size", str(count), "-o", str(out)]
        )
    # exit 4 is expected: random weights over 1000 classes lose agreement in INT8; memory is what is measured
    if code not in (0, 4):
        raise RuntimeError(f"ghost-export exited {code}")
    return {"images": count, "wall_s": time.perf_counter() - start, "exit": code, "torch": "torch" in sys.modules}


def write_calib_dir(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """`count` digit images as files: the shipped ones as they are, repeats past 1797 shifted (PNG, at `size`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = digit_paths(seed)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = paths[i % len(paths)]
        if i < len(paths):
            (folder / f"{i:05d}{path.suffix}").write_bytes(path.read_bytes())
        else:
            _shifted(load_rgb(path).resize((size, size), _bilinear()), rng).save(folder / f"{i:05d}.png")


CHILDREN = {
    "ours": child_ours,
    "forward": child_forward,
    "ort": child_ort,
    "modelopt": child_modelopt,
    "export": child_export,
}


def child_main(kind: str, onnx_path: str, count: int, size: int, out: str) -> None:
    """Entry point of a child process: run one calibration and print its measurements as JSON."""
    result = CHILDREN[kind](Path(onnx_path), count, size, Path(out))
    if "torch" in sys.modules and kind != "export":
        raise RuntimeError(f"the {kind} calibration imported torch: its peak memory would not be its own")
    result.setdefault("peak_mb", _peak_mb())
    print(json.dumps(result))


# ---------------------------------------------------------------- parent


def build_onnx(path: Path, width: float, size: int) -> None:
    """Export and simplify a realistic GhostNet (random weights, BatchNorm statistics from digits) to `path`."""
    import onnx

    from ghost_deploy.backends.onnx.export import onnx_from_module
    from ghost_deploy.backends.onnx.simplify import simplify_onnx
    from ghost_deploy.config import BatchSpec
    from ghost_deploy.model.synthetic import realistic_ghostnet

    images = np.stack([s.array for s in digit_samples(64, size, seed=1)])
    model = realistic_ghostnet(images, width=width, num_classes=1000)
    exported = onnx_from_module(model, size, BatchSpec(None, (1, 8, 8)))
    simplified, _ = simplify_onnx(exported)
    onnx.save(simplified, str(path))


def run_child(kind: str, onnx_path: Path, count: int, size: int, tmp: Path) -> dict[str, Any]:
    """Run one calibration in a fresh interpreter; returns its measurements or {'error': ...}."""
    out = tmp / f"{kind}-{count}.onnx"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        str(onnx_path),
        str(count),
        str(size),
        str(out),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": f"exit {proc.returncode}: {lines[-1] if lines else 'no message'}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _row(name: str, count: int, result: dict[str, Any] | str) -> str:
    if isinstance(result, str):
        return f"  {name:<12} {count:>6}  {result}"
    if "error" in result:
        return f"  {name:<12} {count:>6}  failed: {result['error']}"
    per_image = result["wall_s"] / count * 1e3
    return f"  {name:<12} {count:>6}  {result['peak_mb']:>9.0f}  {result['wall_s']:>8.1f}  {per_image:>8.1f}" + (
        f"  {result['before_mb']:>13.0f}" if "before_mb" in result else ""
    )


def main() -> None:
    """Run every calibration and print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,512", help="image counts for ours and ModelOpt (default 128,512)")
    parser.add_argument("--ort-sizes", default="32,128", help="image counts for ONNX Runtime (never 512: ~28 GB)")
    parser.add_argument("--skip-ort", action="store_true", help="leave out ONNX Runtime's quantize_static")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--child", nargs=5, metavar=("KIND", "ONNX", "COUNT", "SIZE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, onnx_path, count, size, out = args.child
        child_main(kind, onnx_path, int(count), int(size), out)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ort_sizes = [] if args.skip_ort else [int(s) for s in args.ort_sizes.split(",") if s]
    has_modelopt = importlib.util.find_spec("modelopt") is not None
    print(f"GhostNet {args.width}x at {args.size}x{args.size}, calibration batch 8, {os.cpu_count()} CPUs")
    print(f"  load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        onnx_path = tmp / "ghostnet.onnx"
        start = time.perf_counter()
        build_onnx(onnx_path, args.width, args.size)
        print(f"  FP32 ONNX exported and simplified in {time.perf_counter() - start:.1f} s")
        rows: list[tuple[str, int, dict[str, Any] | str]] = []
        ours: dict[int, dict[str, Any]] = {}
        whole: dict[int, dict[str, Any]] = {}
        for count in sizes:
            write_calib_dir(tmp / f"export-{count}.calib", count, args.size)
            whole[count] = run_child("export", onnx_path, count, args.size, tmp)
            rows.append(("ghost-export", count, whole[count]))
        for count in sizes:
            ours[count] = run_child("ours", onnx_path, count, args.size, tmp)
            rows.append(("ours", count, ours[count]))
        if sizes:
            rows.append(("fp32 forward", min(sizes), run_child("forward", onnx_path, min(sizes), args.size, tmp)))
        for count in ort_sizes:
            rows.append(("onnxruntime", count, run_child("ort", onnx_path, count, args.size, tmp)))
        for count in sizes:
            result = run_child("modelopt", onnx_path, count, args.size, tmp) if has_modelopt else MODELOPT_HINT
            rows.append(("modelopt", count, result))
    print(f"  load average after:  {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    _print_table(rows)
    _print_targets(whole, ours)


def _print_table(rows: list[tuple[str, int, dict[str, Any] | str]]) -> None:
    """One row per run, and what each row measures."""
    print()
    print(f"  {'run':<12} {'images':>6}  {'peak MB':>9}  {'wall s':>8}  {'ms/image':>8}  {'RSS before MB':>13}")
    for name, count, result in rows:
        print(_row(name, count, result))
    print("  (ghost-export: the whole `ghost-export ONNX --target onnx-int8 --calib DIR --calib-size N` process,")
    print("   minmax ranges, verification included. ours: calibrate() alone with entropy ranges, after imports and")
    print("   onnx.load; RSS before = peak up to the call. fp32 forward: the same batches through the FP32 model")
    print("   without exposed outputs, no calibration. ONNX Runtime and ModelOpt: the whole quantization call.")
    print("   Peak = VmHWM of the fresh process, or its child's ru_maxrss.)")


def _print_targets(whole: dict[int, dict[str, Any]], ours: dict[int, dict[str, Any]]) -> None:
    """The whole process's peak at the largest size against the smallest, the calibrator's speed, the targets."""
    good = {n: r for n, r in whole.items() if "error" not in r}
    fast = {n: r for n, r in ours.items() if "error" not in r}
    if not good:
        return
    small, large = min(good), max(good)
    ratio = good[large]["peak_mb"] / good[small]["peak_mb"]
    print()
    print(
        f"  ghost-export: whole-process peak at {large} images = {good[large]['peak_mb']:.0f} MB "
        f"(target < {TARGET_PEAK_MB:.0f} MB); torch imported: {good[large].get('torch')}"
    )
    print(f"  ghost-export: peak at {large} / peak at {small} = {ratio:.3f} (target <= {TARGET_GROWTH:.2f})")
    checks = [("peak", good[large]["peak_mb"] < TARGET_PEAK_MB), ("growth", ratio <= TARGET_GROWTH)]
    if fast:
        worst_ms = max(r["wall_s"] / n * 1e3 for n, r in fast.items())
        per_image = ", ".join(f"{r['wall_s'] / n * 1e3:.1f} ms at {n}" for n, r in sorted(fast.items()))
        print(f"  ours (entropy): time per image {per_image} (target <= {TARGET_MS_PER_IMAGE:.0f} ms)")
        checks.append(("time per image", worst_ms <= TARGET_MS_PER_IMAGE))
    missed = [text for text, ok in checks if not ok]
    print(f"  targets: {'all met' if not missed else 'missed: ' + ', '.join(missed)}")


if __name__ == "__main__":
    main()
