"""Per-layer time as one table for ONNX Runtime and TensorRT: the top layers, their share, their ONNX nodes.

ONNX Runtime: its profiler in a session of its own (`ort_layer_profile`); kernels map back to the ONNX node
of the same name or to the nodes fused into them. TensorRT: the names its IProfiler reports (collected by
`trt_profile`) map back with `trt_layer_nodes`. TensorRT's ONNX parser names each layer after its ONNX node,
and the builder keeps those names when it fuses (with `profiling_verbosity` DETAILED, as `trt_build` sets):

- `A + B` is a fusion of layers A and B (a Conv with its activation, say);
- `PWN(A, B)` a fused pointwise kernel, nested as `PWN(PWN(A), B)`;
- `{ForeignNode[A...B]}` a Myelin subgraph from node A to node B (the nodes between them in graph order);
- `Reformatting CopyNode for Input Tensor 0 to L` a layout/precision copy TensorRT inserted (no ONNX node);
- `(Unnamed Layer* 7) [Shuffle]` a layer without an ONNX name; ` [Type]` suffixes, ` copy` (a Concat
  input copied into place), `_clone_N` and `_mylN_M` (Myelin kernels) are stripped; a name that is a
  tensor (`/x/Conv_output_0`) maps to the node producing it.

Both profilers give rows `{kernel, op, onnx_nodes, ms_per_run, share}`, sorted by time.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_REFORMAT = re.compile(r"^Reformatting CopyNode for ")
_FOREIGN = re.compile(r"\{ForeignNode\[(.*)\]\}")
_MYELIN_KERNEL = re.compile(r"__myl|_myl\d+_\d+$")
_UNNAMED = re.compile(r"\(Unnamed Layer\* \d+\)(?: \[[^\]]*\])?")
_SPLIT = re.compile(r"\s\+\s|,\s*|PWN\(|\)")
_STRIP = (
    re.compile(r"(?:\s*\[[^\]]*\])+$"),  # " [Convolution]", "[Int8]"
    re.compile(r" copy$"),  # "<tensor> copy": a Concat input copied into place
    re.compile(r"_clone_\d+$"),
    re.compile(r"_myl\d+_\d+$"),
    re.compile(r"_output_\d+$"),  # a tensor named after its producer (PyTorch's exporter)
    re.compile(r"_\d+$"),  # a second layer the parser made for one node
)


@dataclasses.dataclass(frozen=True)
class GraphIndex:
    """The ONNX graph's node names in graph (topological) order and the node producing each tensor."""

    names: tuple[str, ...]
    positions: Mapping[str, int]
    producers: Mapping[str, str]

    @classmethod
    def from_graph(cls, graph: Any) -> GraphIndex:
        """Index an `onnx.GraphProto`."""
        names = tuple(n.name for n in graph.node)
        producers = {out: n.name for n in graph.node for out in n.output}
        return cls(names, {name: i for i, name in enumerate(names)}, producers)

    def position(self, name: str) -> int:
        """Where a node lies in graph order."""
        return self.positions[name]


def trt_layer_nodes(layer: str, index: GraphIndex | None) -> tuple[str, list[str]]:
    """The kind of a TensorRT layer ('fused', 'pointwise', 'myelin', 'reformat', 'layer', 'unnamed') and
    the ONNX nodes behind it, in graph order; without an index, the names as the layer spells them."""
    if _REFORMAT.match(layer):
        return "reformat", []
    foreign = _FOREIGN.search(layer)
    if foreign is not None:
        ends = [_resolve(t, index) for t in foreign.group(1).split("...", 1)]
        found = [e for e in ends if e is not None]
        if index is not None and len(found) == 2:
            lo, hi = sorted(index.position(e) for e in found)
            return "myelin", list(index.names[lo : hi + 1])
        return "myelin", _unique(found)
    tokens = [t.strip() for t in _SPLIT.split(_UNNAMED.sub(" + ", layer))]
    nodes = _unique(n for n in (_resolve(t, index) for t in tokens if t and not t.startswith("__myl")) if n)
    if index is not None:
        nodes.sort(key=index.position)
    if layer.startswith("PWN("):
        kind = "pointwise"
    elif layer.lower() == "myelin" or _MYELIN_KERNEL.search(layer):
        kind = "myelin"
    elif " + " in layer:
        kind = "fused"
    else:
        kind = "layer" if nodes else "unnamed"
    return kind, nodes


def _resolve(token: str, index: GraphIndex | None) -> str | None:
    """The ONNX node a name token stands for, trying it as is, then without each TensorRT suffix."""
    name = token.strip()
    if index is None:
        for pattern in _STRIP[:4]:
            name = pattern.sub("", name)
        return name or None
    for pattern in _STRIP:
        if name in index.positions:
            return name
        if name in index.producers:
            return index.producers[name]
        name = pattern.sub("", name)
    return name if name in index.positions else None


def _unique(names: Any) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(name, None)
    return list(seen)


def layer_rows(
    totals_ms: Mapping[str, float], runs: int, describe: Callable[[str], tuple[str | None, list[str]]]
) -> list[dict[str, Any]]:
    """Rows `{kernel, op, onnx_nodes, ms_per_run, share}`, longest first, from each layer's total time."""
    total = sum(totals_ms.values()) or 1.0
    rows = []
    for name, ms in sorted(totals_ms.items(), key=lambda kv: -kv[1]):
        op, nodes = describe(name)
        rows.append(
            {"kernel": name, "op": op, "onnx_nodes": nodes, "ms_per_run": ms / max(runs, 1), "share": ms / total}
        )
    return rows


def trt_layer_table(totals_ms: Mapping[str, float], runs: int, graph: Any | None) -> list[dict[str, Any]]:
    """The TensorRT per-layer rows, mapped to the nodes of `graph` (an onnx.GraphProto) when given."""
    index = GraphIndex.from_graph(graph) if graph is not None else None
    return layer_rows(totals_ms, runs, lambda name: trt_layer_nodes(name, index))


def ort_layer_profile(
    model_path: Path,
    feeds: dict[str, np.ndarray],
    runs: int,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, Any]:
    """Per-node time from ONNX Runtime's profiler, in a session of its own, mapped to ONNX node names."""
    import onnx
    import onnxruntime as ort

    from ghost_deploy.backends.onnxruntime import new_session

    skip = 3  # the first runs allocate and fill caches: left out like trtexec's warm-up
    with tempfile.TemporaryDirectory(prefix="ghost-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        if threads:
            opts.intra_op_num_threads = threads
        session = new_session(model_path, opts, providers)
        for _ in range(skip + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    ordered = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[skip:]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in ordered]
    totals: dict[str, float] = {}
    ops: dict[str, str | None] = {}
    for e in events:
        if e.get("cat") == "Node" and any(a <= e["ts"] <= b for a, b in spans):
            name = e["name"].removesuffix("_kernel_time")
            totals[name] = totals.get(name, 0.0) + e["dur"] / 1e3
            ops.setdefault(name, e.get("args", {}).get("op_name"))
    graph = onnx.load(str(model_path), load_external_data=False).graph
    count = max(len(spans), 1)
    return {
        "profiler": "ONNX Runtime profiler (SessionOptions.enable_profiling)",
        "inserted_by": "ONNX Runtime",
        "runs": len(spans),
        "run_ms": sum(b - a for a, b in spans) / 1e3 / count,
        "nodes_ms": sum(totals.values()) / count,
        "layers": layer_rows(totals, len(spans), lambda name: (ops[name], ort_kernel_nodes(name, ops[name], graph))),
    }


def ort_kernel_nodes(kernel: str, ort_op: str | None, graph: Any) -> list[str]:
    """The ONNX nodes behind an ORT kernel: the node of that name, or the nodes fused into it."""
    by_name = {n.name: n for n in graph.node}
    if kernel in by_name:
        return [kernel]
    producers = {out: n for n in graph.node for out in n.output}
    node = producers.get(kernel.removesuffix("_nchwc"))
    if node is None:
        return []  # a kernel ORT inserted itself (layout reorders)
    fused = [node.name]
    want = {"FusedConv": "Conv", "FusedGemm": "Gemm"}.get(ort_op or "", ort_op)
    while node.op_type != want and len(fused) < 4 and node.input and node.input[0] in producers:
        node = producers[node.input[0]]  # walk back over the activations fused into the kernel
        fused.insert(0, node.name)
    return fused if node.op_type == want else fused[-1:]
