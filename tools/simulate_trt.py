"""The shipped model through every trt-* path under the simulated TensorRT 8.6, 10.3, 10.13 and 11.1.

    python tools/simulate_trt.py [--model models/ghostnet_digits.pt] [--work DIR]

For each version: `ghost-export --target trt-fp32|trt-fp16|trt-int8` (and `--int8-mode implicit` where the version
has calibrators), `ghost-deploy build` of the FP32 (or, on 11, FP16) ONNX with `--dynamic-batch 1:4:8`,
`ghost-deploy verify` of that engine, `ghost-deploy profile`, `ghost-deploy pack` and `ghost-deploy run`, each as a
user runs it (a fresh process with GHOST_DEPLOY_SIMULATE_TRT set), then the bundle without the variable (it must
be refused, exit 2). Prints one line per command: exit code, seconds and the verification's top-1 agreement.
Then one bundle (FP32 ONNX, trt-fp16 and trt-int8 engines, packed once under 10.3 on the desktop GPU) is
prepared and run on every simulated version and GPU in DEVICES: the packed engine where it fits, else an
engine built there from the bundled ONNX; each verified on the bundle's reference set.
Every figure is from the SIMULATOR (engines run on ONNX Runtime CPU): it shows the paths work, not GPU speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("8.6", "10.3", "10.13", "11.1")
PROG = [sys.executable, "-m", "ghost_deploy"]
EXPORT = [sys.executable, "-c", "import sys; from ghost_deploy.cli import export_main; sys.exit(export_main())"]


def run(cmd: list[str], env: dict[str, str] | None) -> tuple[int, float, str]:
    """Run one command as a user would; its exit code, wall seconds and standard error."""
    start = time.perf_counter()
    full = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    if env is None:
        full.pop("GHOST_DEPLOY_SIMULATE_TRT", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full)
    return proc.returncode, time.perf_counter() - start, proc.stderr


def agreement(report: Path) -> str:
    """The top-1 agreement a report's verification measured, as text."""
    try:
        ver = json.loads(report.read_text())["verification"]["metrics"]
        return f"top-1 agreement {ver['top1_agreement']:.2%}, cosine {ver['cosine_mean']:.5f}"
    except (OSError, ValueError, KeyError):
        return "-"


def one_version(version: str, model: Path, work: Path) -> list[tuple[str, int, float, str]]:
    """Every command under one simulated version."""
    env = {"GHOST_DEPLOY_SIMULATE_TRT": version}
    rows = []
    base = work / version
    base.mkdir(parents=True)
    modes = [("trt-fp32", []), ("trt-fp16", []), ("trt-int8", [])]
    if version != "11.1":
        modes.append(("trt-int8", ["--int8-mode", "implicit"]))
    for target, extra in modes:
        engine = base / f"{target}{'-implicit' if extra else ''}.engine"
        code, secs, err = run([*EXPORT, str(model), "--target", target, *extra, "-o", str(engine)], env)
        rows.append(
            (
                f"ghost-export --target {target} {' '.join(extra)}".strip(),
                code,
                secs,
                agreement(Path(f"{engine}.json")) if code == 0 else err.strip()[-200:],
            )
        )
    onnx = base / "dyn.onnx"
    onnx_target = "onnx-fp16" if version == "11.1" else "onnx"  # TensorRT 11 has no FP16 flag: FP16 from the ONNX
    run([*EXPORT, str(model), "--target", onnx_target, "--dynamic-batch", "1:4:8", "-o", str(onnx)], None)
    engine = base / "dyn.trt-fp16.engine"
    build = [*PROG, "build", str(onnx), "--target", "trt-fp16", "--dynamic-batch", "1:4:8", "-o", str(engine)]
    for name, cmd in (
        ("ghost-deploy build --dynamic-batch 1:4:8", build),
        (
            "ghost-deploy verify ENGINE",
            [*PROG, "verify", str(engine), "--reference", str(model), "-o", str(base / "v.json")],
        ),
        (
            "ghost-deploy profile ENGINE",
            [*PROG, "profile", str(engine), "--duration-s", "1", "-o", str(base / "p.json")],
        ),
        ("ghost-deploy pack ENGINE", [*PROG, "pack", str(base / "trt-fp16.engine"), "-o", str(base / "b.tar.gz")]),
        (
            "ghost-deploy run BUNDLE",
            [*PROG, "run", str(base / "b.tar.gz"), str(next((REPO / "calibration/digits/test/4").glob("*.png")))],
        ),
    ):
        code, secs, err = run(cmd, env)
        note = (
            agreement(base / "v.json") if "verify" in name and code == 0 else ("" if code == 0 else err.strip()[-200:])
        )
        rows.append((name, code, secs, note))
    code, secs, err = run([*PROG, "run", str(base / "b.tar.gz"), str(model)], None)
    rows.append(("ghost-deploy run BUNDLE (no simulation: must be exit 2)", code, secs, err.strip()[-160:]))
    return rows


# One bundle, every device (issue 19): packed once under 10.3 on the desktop GPU, served on each of these
DEVICES = (
    ("10.3", ""),
    ("10.3", "RTX 3060:8.6"),
    ("10.3", "orin"),
    ("8.6", "orin"),
    ("10.13", ""),
    ("11.1", ""),
)


def one_bundle(model: Path, work: Path) -> list[tuple[str, int, float, str]]:
    """Pack FP32 ONNX + trt-fp16 + trt-int8 under 10.3 once; then prepare and run it on every simulated device."""
    base = work / "one-bundle"
    base.mkdir(parents=True)
    onnx, bundle, cache = base / "m.onnx", base / "b.tar.gz", base / "engine-cache"
    pack_env = {"GHOST_DEPLOY_SIMULATE_TRT": "10.3", "GHOST_DEPLOY_ENGINE_CACHE": str(cache)}
    rows = []
    fp16, int8 = base / "m.trt-fp16.engine", base / "m.trt-int8.engine"
    steps = [
        ("ghost-export MODEL (FP32 ONNX)", [*EXPORT, str(model), "-o", str(onnx)], None),
        (
            "ghost-export --target trt-fp16 (10.3)",
            [*EXPORT, str(onnx), "--target", "trt-fp16", "-o", str(fp16)],
            pack_env,
        ),
        (
            "ghost-export --target trt-int8 (10.3)",
            [*EXPORT, str(onnx), "--target", "trt-int8", "-o", str(int8)],
            pack_env,
        ),
        (
            "ghost-deploy pack --default trt-int8 (10.3)",
            [*PROG, "pack", str(int8), str(fp16), str(onnx), "-o", str(bundle), "--default", "trt-int8"],
            pack_env,
        ),
    ]
    for name, cmd, env in steps:
        code, secs, err = run(cmd, env)
        rows.append((name, code, secs, "" if code == 0 else err.strip()[-200:]))
    if bundle.is_file():
        rows[-1] = (*rows[-1][:3], f"{bundle.stat().st_size / 1e6:.2f} MB")
    image = str(next((REPO / "calibration/digits/test/4").glob("*.png")))
    for version, gpu in DEVICES:
        env = {**pack_env, "GHOST_DEPLOY_SIMULATE_TRT": version, "GHOST_DEPLOY_SIMULATE_GPU": gpu}
        where = f"{version} on {gpu or 'the desktop GPU (8.9)'}"
        code, secs, out = run_out([*PROG, "prepare", str(bundle), "--json"], env)
        rows.append((f"ghost-deploy prepare BUNDLE ({where})", code, secs, _prepared(out) if code == 0 else out[-200:]))
        code, secs, out = run_out([*PROG, "run", str(bundle), image, "--engine", "never", "--json"], env)
        rows.append((f"ghost-deploy run --engine never ({where})", code, secs, _ran(out) if code == 0 else out[-200:]))
    code, secs, out = run_out([*PROG, "run", str(bundle), image, "--json"], None)
    rows.append(
        (
            "ghost-deploy run BUNDLE (no TensorRT: the ONNX on ONNX Runtime)",
            code,
            secs,
            _ran(out) if code == 0 else out[-200:],
        )
    )
    return rows


def run_out(cmd: list[str], env: dict[str, str] | None) -> tuple[int, float, str]:
    """Run one command; its exit code, seconds, and standard output (standard error when it failed)."""
    start = time.perf_counter()
    full = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    if env is None:
        full.pop("GHOST_DEPLOY_SIMULATE_TRT", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full)
    return proc.returncode, time.perf_counter() - start, proc.stdout if proc.returncode == 0 else proc.stderr


def _prepared(out: str) -> str:
    report = json.loads(out)
    engine = report["engine"]
    metrics = engine["verification"]["metrics"]
    return (
        f"{report['artifact']}: {engine['source']}, verified on {metrics['samples']} reference inputs "
        f"(cosine mean {metrics['cosine_mean']:.5f}, top-1 agreement {metrics['top1_agreement']:.2%})"
    )


def _ran(out: str) -> str:
    report = json.loads(out)
    engine = report.get("engine") or {}
    how = f"engine {engine['source']}" if engine else "ONNX Runtime"
    return f"{report['artifact']} ({how}): {report['results'][0]['top'][0]['label']}"


def main() -> int:
    """Run the matrix and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ghostnet_digits.pt")
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--one-bundle-only", action="store_true", help="run only the one-bundle-every-device part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simulate-trt-") as tmp:
        work = args.work or Path(tmp)
        failures = 0
        print("SIMULATED TensorRT (ghost_deploy.testing.trtsim): engines run on ONNX Runtime CPU")
        for version in () if args.one_bundle_only else VERSIONS:
            print(f"\nTensorRT {version} (simulated)")
            for name, code, secs, note in one_version(version, args.model, work):
                expected = 2 if "must be exit 2" in name else 0
                failures += code != expected
                print(f"  exit {code} {'ok ' if code == expected else 'BAD'} {secs:6.1f} s  {name}  {note}")
        print("\nOne bundle for every device: packed once under 10.3, built and verified where the engine does not fit")
        for name, code, secs, note in one_bundle(args.model, work):
            failures += code != 0
            print(f"  exit {code} {'ok ' if code == 0 else 'BAD'} {secs:6.1f} s  {name}  {note}")
        print(f"\n{failures} command(s) did not exit as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
