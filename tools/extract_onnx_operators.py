"""The ONNX operators and opsets each simulated TensorRT's ONNX parser takes, from onnx-tensorrt's docs/operators.md.

    python tools/extract_onnx_operators.py --onnx-git /work/.mirror/onnx+onnx-tensorrt/repo

writes ghost_deploy/testing/trtsim/api/trt-onnx-ops-<V>.json: the operators marked supported ("Y") in the
operators.md of the onnx-tensorrt commit that TensorRT release pins as its `parsers/onnx` submodule, and the
opset range that page states. Where that commit is not stored (10.3, 10.13, 11.1), the list is the nearest
stored release's (10.1-GA) plus the operators onnx-tensorrt's docs/Changelog.md says each later release
added; the result is recorded with its derivation. Checked against 10.15's operators.md (10.1-GA + the
changelog's additions through 10.15 is exactly that page's supported list).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

API_DIR = Path(__file__).resolve().parents[1] / "ghost_deploy" / "testing" / "trtsim" / "api"
_ROW = re.compile(r"^\|\s*([A-Za-z][A-Za-z0-9]*)\s*\|\s*([YN])\s*\|", re.M)
_RANGE = re.compile(r"opset (\d+) to opset (\d+)|up to Opset (\d+)", re.I)

# Added operators per onnx-tensorrt docs/Changelog.md ("# TensorRT 10.4 GA Release": "Added support for
# `BlackmanWindow`, `HammingWindow`, and `HannWindow` operations"; 10.5: "real-valued `STFT`"; 10.14: "the
# `Attention` operator"; 10.15: "`RotaryEmbedding`, `RMSNormalization` and `TensorScatter`") and NVIDIA/
# TensorRT CHANGELOG.md ("## 11.0 GA": "Added support for `Swish` operator"). 10.2 and 10.3 added none.
_ADDED = {
    "10.4": ("BlackmanWindow", "HammingWindow", "HannWindow"),
    "10.5": ("STFT",),
    "10.14": ("Attention",),
    "10.15": ("RotaryEmbedding", "RMSNormalization", "TensorScatter"),
    "11.0": ("Swish",),
}

# version -> (onnx-tensorrt ref, releases whose additions apply, opset range when the page is not the version's)
_SOURCES: dict[str, tuple[str, tuple[str, ...], tuple[int, int] | None, str]] = {
    "8.5": ("fd119fec8565264add819f8edc801066116a32dd", (), None, "the commit TensorRT release/8.5 pins"),
    "8.6": ("6ba67d3428e05f690145373ca87fb8d32f98df45", (), None, "the commit TensorRT release/8.6 pins"),
    "10.3": (
        "10.1-GA",
        (),
        (9, 20),
        "TensorRT release/10.3 pins onnx-tensorrt 62bdde2a, not stored here; 10.1-GA's page, whose range "
        "(opset 9 to 20) no later changelog entry through 10.3 changes, and 10.2/10.3 added no operator",
    ),
    "10.13": (
        "10.1-GA",
        ("10.4", "10.5"),
        (9, 22),
        "TensorRT release/10.13 pins onnx-tensorrt 346bdcae, not stored here; 10.1-GA's page plus the "
        "operators the changelog adds in 10.4 and 10.5. Maximum opset: 10.6 took ONNX 1.17 (opset 22), 10.11 "
        "ONNX 1.18 (opset 23) and 10.15's page says 24; no page of 10.13 is stored, so the simulator takes 22, "
        "the stricter reading (choose the stricter behaviour where the sources are silent)",
    ),
    "11.1": (
        "10.1-GA",
        ("10.4", "10.5", "10.14", "10.15", "11.0"),
        (9, 24),
        "TensorRT v11.1 pins onnx-tensorrt 7c51a63a, not stored here; 10.1-GA's page plus the operators the "
        "changelogs add through 11.0 (= 10.15's page plus Swish). Maximum opset 24: 10.15's page says 24 and "
        "NVIDIA/TensorRT v11.5's release notes say 11.5 'Added support for ONNX opset 25'",
    ),
}


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True, text=True).stdout


def int8_types(text: str) -> list[str]:
    """The supported operators whose 'Supported Types' column names INT8 (8.x pages list the precisions each
    operator's layers implement; 10.x pages list INT8 only as a quantized type, for Cast/DequantizeLinear)."""
    rows = re.finditer(r"^\|\s*([A-Za-z][A-Za-z0-9]*)\s*\|\s*Y\s*\|([^|\n]*)", text, re.M)
    return sorted({m[1] for m in rows if re.search(r"\bINT8\b", m[2])})


def parse_page(text: str) -> tuple[list[str], list[str], tuple[int, int]]:
    """(supported, unsupported, (min opset, max opset)) of an operators.md."""
    supported = sorted({m[1] for m in _ROW.finditer(text) if m[2] == "Y"})
    unsupported = sorted({m[1] for m in _ROW.finditer(text) if m[2] == "N"} - set(supported))
    found = _RANGE.search(text)
    if found is None:
        raise ValueError("operators.md states no opset range")
    # 8.x pages say "up to Opset 17"; ModelImporter.cpp warns below opset 7 ("TensorRT supports ONNX graphs
    # generated with at least opset 7")
    opsets = (7, int(found[3])) if found[3] else (int(found[1]), int(found[2]))
    return supported, unsupported, opsets


def extract(version: str, onnx_git: str) -> dict[str, Any]:
    """The operator table of one TensorRT version."""
    ref, releases, opsets, how = _SOURCES[version]
    commit = _git(onnx_git, "rev-parse", ref).strip()
    supported, unsupported, page_opsets = parse_page(_git(onnx_git, "show", f"{commit}:docs/operators.md"))
    added = sorted({op for release in releases for op in _ADDED[release]})
    # INT8 implementations: the version's own page where it lists them (8.x), else the last page that does
    # (8.6's, the commit TensorRT release/8.6 pins): implicit INT8 on 10.x runs the same layers' INT8 kernels
    int8_ref = ref if version.startswith("8.") else _SOURCES["8.6"][0]
    int8_commit = _git(onnx_git, "rev-parse", int8_ref).strip()
    int8 = int8_types(_git(onnx_git, "show", f"{int8_commit}:docs/operators.md"))
    operators = sorted(set(supported) | set(added))
    low, high = opsets or page_opsets
    return {
        "schema_version": 1,
        "trt": version,
        "generator": "tools/extract_onnx_operators.py",
        "source": f"onnx/onnx-tensorrt@{commit} ({ref}):docs/operators.md",
        "derivation": how,
        "added_by_changelog": added,
        "opset": {"min": low, "max": high},
        "int8_operators": int8,
        "int8_source": f"onnx/onnx-tensorrt@{int8_commit}:docs/operators.md ('Supported Types' naming INT8)",
        "operators": operators,
        "unsupported_listed": sorted(set(unsupported) - set(added)),
    }


def main(argv: list[str] | None = None) -> int:
    """Write trt-onnx-ops-<V>.json beside the API descriptions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx-git", required=True, help="a git dir of onnx/onnx-tensorrt")
    parser.add_argument("--versions", nargs="*", default=list(_SOURCES))
    args = parser.parse_args(argv)
    for version in args.versions:
        table = extract(version, args.onnx_git)
        out = API_DIR / f"trt-onnx-ops-{version}.json"
        out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"{out.name}: {len(table['operators'])} operators, opset {table['opset']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
