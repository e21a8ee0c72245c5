"""Extract the C++ integer of every enumerator TensorRT's Python API binds, from that release's own headers.

    python tools/extract_trt_enums.py --trt-git /work/.mirror/NVIDIA+TensorRT/repo \\
        --onnx-git /work/.mirror/onnx+onnx-tensorrt/repo

writes ghost_deploy/testing/trtsim/api/trt-enums-<V>.json for every version the simulator has an API
description of. The enums come from `include/NvInfer*.h` (and `NvUffParser.h` on 8.x) of NVIDIA/TensorRT at
the commit the API description was read at (its `commit`), plus `python/include/**.h` for the few enums
only the bindings declare (PluginArgType, PluginArgDataType, QuickPluginCreationRequest); the ONNX parser's
`ErrorCode`/`OnnxParserFlag` come from `NvOnnxParser.h` of onnx/onnx-tensorrt at the commit TensorRT pins as
its `parsers/onnx` submodule, where that commit is stored, else from the nearest stored header that has the
enumerator (named in the output's `parser_header`). A pybind11 enum value is its C++ enumerator's integer, so
`int(member)` on a real TensorRT is what this file says.
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
VERSIONS = ("8.5", "8.6", "10.3", "10.13", "11.1")
# The parser header of versions whose pinned onnx-tensorrt commit is not stored in the mirror: the release
# branch nearest below (10.1-GA) and above (TensorRT 11.1's own include/NvOnnxParser.h); every enumerator the
# version binds must have one value in both, else the extraction fails.
_PARSER_FALLBACK = ("10.1-GA",)
_ENUM = re.compile(r"\benum\s+class\s+(\w+)\s*(?::\s*[\w:]+\s*)?\{(.*?)\}\s*;", re.S)
_CONSTANT = re.compile(r"\bstatic\s+constexpr\s+\w+\s+(\w+)\s*=\s*(0[xX][0-9a-fA-F]+|\d+)\s*;")
_ENTRY = re.compile(r"^([A-Za-z_]\w*)(?:\s+\w+)*?\s*(?:=\s*(.+))?$", re.S)


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True, text=True).stdout


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _evaluate(expr: str, known: dict[str, int]) -> int:
    """An enumerator's initializer: integers, earlier enumerators, << | + - ( ) and static_cast<...>()."""
    expr = re.sub(r"static_cast<[\w:]+>", "", expr.strip())
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr)

    def name(match: re.Match[str]) -> str:
        key = match.group(0).split("::")[-1]
        if key not in known:
            raise ValueError(f"unknown enumerator {match.group(0)!r} in {expr!r}")
        return str(known[key])

    expr = re.sub(r"\b[A-Za-z_][\w:]*\b", name, expr)
    if not re.fullmatch(r"[\d\sxXa-fA-F<>|+\-()]*", expr):
        raise ValueError(f"cannot evaluate {expr!r}")
    return int(eval(expr, {"__builtins__": {}}))


def parse_enums(text: str) -> dict[str, dict[str, tuple[int, int]]]:
    """{enum name: {enumerator: (value, line)}} of every `enum class` in a header."""
    clean = _strip_comments(text)
    constants = {m[1]: int(m[2], 0) for m in _CONSTANT.finditer(clean)}  # kPLUGIN_VERSION_PYTHON_BIT = 0x40
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for match in _ENUM.finditer(clean):
        values: dict[str, tuple[int, int]] = {}
        plain: dict[str, int] = dict(constants)
        nxt = 0
        offset = match.start(2)
        for raw in match.group(2).split(","):
            entry = raw.strip()
            line = clean.count("\n", 0, offset + len(raw) - len(raw.lstrip())) + 1
            offset += len(raw) + 1
            if not entry:
                continue
            parsed = _ENTRY.match(entry)
            if parsed is None:
                raise ValueError(f"enum {match.group(1)}: cannot read the enumerator {entry!r}")
            value = _evaluate(parsed.group(2), plain) if parsed.group(2) else nxt
            values[parsed.group(1)] = (value, line)
            plain[parsed.group(1)] = value
            nxt = value + 1
        found.setdefault(match.group(1), values)
    return found


def _headers(git_dir: str, commit: str) -> dict[str, str]:
    # include/: the library's API; python/include/: the enums only the Python bindings declare (plugins)
    names = _git(git_dir, "ls-tree", "-r", "--name-only", commit, "include/", "python/include/").split()
    return {n: _git(git_dir, "show", f"{commit}:{n}") for n in names if n.endswith(".h")}


def _parser_headers(trt_git: str, onnx_git: str, commit: str, trt_headers: dict[str, str]) -> list[tuple[str, str]]:
    """(source, text) of NvOnnxParser.h candidates, the pinned submodule commit first."""
    if "include/NvOnnxParser.h" in trt_headers:
        return [(f"NVIDIA/TensorRT@{commit}:include/NvOnnxParser.h", trt_headers["include/NvOnnxParser.h"])]
    pinned = _git(trt_git, "ls-tree", commit, "parsers/onnx").split()[2]
    try:
        return [(f"onnx/onnx-tensorrt@{pinned}:NvOnnxParser.h", _git(onnx_git, "show", f"{pinned}:NvOnnxParser.h"))]
    except subprocess.CalledProcessError:
        out = []
        for ref in _PARSER_FALLBACK:
            rev = _git(onnx_git, "rev-parse", ref).strip()
            out.append(
                (f"onnx/onnx-tensorrt@{rev} ({ref}):NvOnnxParser.h", _git(onnx_git, "show", f"{rev}:NvOnnxParser.h"))
            )
        last = VERSIONS[-1]
        api = json.loads((API_DIR / f"trt-api-{last}.json").read_text())
        text = _git(trt_git, "show", f"{api['commit']}:include/NvOnnxParser.h")
        out.append((f"NVIDIA/TensorRT@{api['commit']} (TensorRT {last}):include/NvOnnxParser.h", text))
        return out


def _lookup(
    cpp_type: str, enumerator: str, tables: list[tuple[str, dict[str, dict[str, tuple[int, int]]]]]
) -> tuple[int, str, int]:
    hits = [(src, t[cpp_type][enumerator]) for src, t in tables if enumerator in t.get(cpp_type, {})]
    if not hits:
        raise ValueError(f"{cpp_type}::{enumerator} is in no header")
    if len({value for _src, (value, _line) in hits}) != 1:
        raise ValueError(f"{cpp_type}::{enumerator} has different values in {[h[0] for h in hits]}")
    src, (value, line) = hits[0]
    return value, src, line


def extract(version: str, trt_git: str, onnx_git: str) -> dict[str, Any]:
    """The enum table of one version."""
    api = json.loads((API_DIR / f"trt-api-{version}.json").read_text())
    commit = api["commit"]
    headers = _headers(trt_git, commit)
    trt_tables = [
        (f"NVIDIA/TensorRT@{commit}:{n}", parse_enums(t))
        for n, t in sorted(headers.items())
        if not n.endswith("NvOnnxParser.h")  # nvonnxparser::ErrorCode is not nvinfer1::ErrorCode
    ]
    parser_tables = [(src, parse_enums(t)) for src, t in _parser_headers(trt_git, onnx_git, commit, headers)]
    enums: dict[str, Any] = {}
    for qualname, spec in sorted(api["enums"].items()):
        parser = spec["file"].endswith("pyOnnx.cpp")
        tables = parser_tables if parser else trt_tables
        cpp_type = spec["cpp_type"].split("::")[-1]
        values = {}
        for member, entry in sorted(spec["values"].items()):
            enumerator = entry["cpp"].split("::")[-1]
            value, src, line = _lookup(cpp_type, enumerator, tables)
            values[member] = {"cpp": entry["cpp"], "value": value, "header": src, "line": line}
        enums[qualname] = {"cpp_type": spec["cpp_type"], "values": values}
    return {
        "schema_version": 1,
        "trt": version,
        "generator": "tools/extract_trt_enums.py",
        "repository": "NVIDIA/TensorRT",
        "commit": commit,
        "parser_header": [src for src, _t in parser_tables],
        "note": "value = the C++ enumerator's integer (what int(member) gives on a real TensorRT); header:line "
        "is where it is declared (line numbers after comments are blanked, i.e. the file's own lines)",
        "enums": enums,
    }


def main(argv: list[str] | None = None) -> int:
    """Write trt-enums-<V>.json beside the API descriptions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trt-git", required=True, help="a git dir of NVIDIA/TensorRT")
    parser.add_argument("--onnx-git", required=True, help="a git dir of onnx/onnx-tensorrt")
    parser.add_argument("--versions", nargs="*", default=list(VERSIONS))
    args = parser.parse_args(argv)
    for version in args.versions:
        table = extract(version, args.trt_git, args.onnx_git)
        out = API_DIR / f"trt-enums-{version}.json"
        out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"{out.name}: {sum(len(e['values']) for e in table['enums'].values())} enumerators", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
