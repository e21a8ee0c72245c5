"""The shipped model through every trt-* path under the simulated TensorRT 8.6, 10.3, 10.13 and 11.1.

    python tools/simulate_trt.py [--model models/ghostnet_digits.pt] [--work DIR]

For each version: `ghost-export --target trt-fp32|trt-fp16|trt-int8` (and `--int8-mode implicit` where the version
has calibrators), `ghost-deploy build` of the FP32 (or, on 11, FP16) ONNX with `--dynamic-batch 1:4:8`,
`ghost-deploy verify` of that engine, `ghost-deploy profile`, `ghost-deploy pack` and `ghost-deploy run`, each as a
user runs it (a fresh process with GHOST_DEPLOY_SIMULATE_TRT set), then the bundle without the variable (it must
be refused, exit 2). Prints one line per command: exit code, seconds and the verification's top-1 agreement.
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


def main() -> int:
    """Run the matrix and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ghostnet_digits.pt")
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simulate-trt-") as tmp:
        work = args.work or Path(tmp)
        failures = 0
        print("SIMULATED TensorRT (ghost_deploy.testing.trtsim): engines run on ONNX Runtime CPU")
        for version in VERSIONS:
            print(f"\nTensorRT {version} (simulated)")
            for name, code, secs, note in one_version(version, args.model, work):
                expected = 2 if "must be exit 2" in name else 0
                failures += code != expected
                print(f"  exit {code} {'ok ' if code == expected else 'BAD'} {secs:6.1f} s  {name}  {note}")
        print(f"\n{failures} command(s) did not exit as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
