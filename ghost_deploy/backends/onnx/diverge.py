"""Find the first ONNX node whose output diverges from the reference's.

Against PyTorch: node names of the TorchScript exporter carry the module scope
(`/blocks/blocks.0/blocks.0.0/ghost1/primary_conv/primary_conv.0/Conv`), which maps back to the module
`blocks.0.0.ghost1.primary_conv.0`; forward hooks capture that module's output. A Conv whose output fed a
BatchNorm in PyTorch was fused with it at export, so it is compared with the BatchNorm's output.
Against another ONNX model: tensors with the same name are compared. A reduced-precision graph (Q/DQ, FP16)
differs from FP32 at every node by design, so it is judged by cosine similarity instead (`first_divergence_cosine`):
the first node whose output's mean cosine similarity with FP32 falls below the precision gate's limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.data.inputs import Batch

if TYPE_CHECKING:
    import torch

# ONNX op -> PyTorch module class names whose output it reproduces
_COMPARABLE = {
    "Conv": ("Conv2d", "Conv1d"),
    "Relu": ("ReLU",),
    "Gemm": ("Linear",),
    "MatMul": ("Linear",),
    "GlobalAveragePool": ("AdaptiveAvgPool2d",),
    "BatchNormalization": ("BatchNorm2d",),
    "HardSigmoid": ("Hardsigmoid",),
    "Sigmoid": ("Sigmoid",),
    "MaxPool": ("MaxPool2d",),
    "AveragePool": ("AvgPool2d",),
}


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first node found to diverge, with its error and how many nodes were compared; for a cosine search,
    its mean cosine similarity with the reference and the limit it fell below."""

    node: str
    op_type: str
    max_abs_error: float
    reference_max_abs: float
    compared_nodes: int
    cosine_mean: float | None = None
    min_cosine: float | None = None
    samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the cosine fields only where a cosine search found the node)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def module_path(node_name: str) -> str | None:
    """The PyTorch module path encoded in a TorchScript-exporter node name, or None."""
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return None
    path: list[str] = []
    prev = ""
    for comp in parts:
        path.append(comp[len(prev) + 1 :] if prev and comp.startswith(prev + ".") else comp)
        prev = comp
    return ".".join(path)


def with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph outputs include every float node output (for intermediate comparison)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    out = onnx.ModelProto()
    out.CopyFrom(inferred)
    existing = {o.name for o in out.graph.output}
    for node in out.graph.node:
        for name in node.output:
            vi = types.get(name)
            if name and name not in existing and vi is not None and vi.type.tensor_type.elem_type in (1, 10):
                out.graph.output.append(vi)
                existing.add(name)
    return out


def _torch_outputs(module: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    captured: dict[str, np.ndarray] = {}
    producer: dict[int, str] = {}
    keep: list[Any] = []  # hold tensors so their ids are not reused during the run
    fused: dict[str, str] = {}

    def hook(name: str, mod: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if type(mod).__name__.startswith("BatchNorm") and args and id(args[0]) in producer:
            fused[producer[id(args[0])]] = name
        producer[id(out)] = name
        keep.append(out)
        captured[name] = out.detach().clone().numpy()

    handles = [
        m.register_forward_hook(lambda mod, a, o, n=name: hook(n, mod, a, o))
        for name, m in module.named_modules()
        if name
    ]
    try:
        with torch.inference_mode():
            module(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    for conv, bn in fused.items():
        captured[conv] = captured[bn]
    captured["__types__"] = np.array([f"{n}={type(m).__name__}" for n, m in module.named_modules() if n])
    return captured


def first_divergence_torch(
    module: torch.nn.Module,
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> Divergence | None:
    """First node (in graph order) whose output differs from its PyTorch module's output."""
    x = next(iter(feeds.values()))
    ref = _torch_outputs(module, x)
    kinds = dict(item.split("=", 1) for item in ref.pop("__types__").tolist())
    outputs = _run_all(model, feeds)
    compared = 0
    for node in model.graph.node:
        path = module_path(node.name)
        if path is None or node.op_type not in _COMPARABLE or kinds.get(path) not in _COMPARABLE[node.op_type]:
            continue
        got, want = outputs.get(node.output[0]), ref.get(path)
        if got is None or want is None or got.shape != want.shape:
            continue
        compared += 1
        div = _check(node, got, want, rtol, atol, compared)
        if div is not None:
            return div
    return None


def first_divergence_onnx(
    reference: onnx.ModelProto,
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> Divergence | None:
    """First node of `model` whose output differs from the same-named tensor of `reference`."""
    ref = _run_all(reference, feeds)
    outputs = _run_all(model, feeds)
    compared = 0
    for node in model.graph.node:
        got, want = outputs.get(node.output[0]), ref.get(node.output[0])
        if got is None or want is None or got.shape != want.shape:
            continue
        compared += 1
        div = _check(node, got, want, rtol, atol, compared)
        if div is not None:
            return div
    return None


def first_divergence_cosine(
    reference: onnx.ModelProto, model: onnx.ModelProto, data: Iterable[Batch], min_cosine: float
) -> Divergence | None:
    """First node of `model` (graph order) whose output's cosine similarity with the same-named tensor of
    `reference`, per sample (the real rows of each batch) and averaged over every batch, is below `min_cosine`.

    Batches stream: one batch's intermediate outputs of both graphs are in memory at a time.
    """
    sums: dict[str, list[float]] = {}  # tensor -> [cosine sum, samples, max abs error, reference max abs]
    seen_as = _dequantized(model)
    with (
        OnnxRuntimeRunner(with_all_outputs(reference).SerializeToString(), optimize=False) as ref_runner,
        OnnxRuntimeRunner(with_all_outputs(model).SerializeToString(), optimize=False) as runner,
    ):
        for batch in data:
            want_all, got_all = ref_runner.infer(batch.feeds), runner.infer(batch.feeds)
            for name, want in want_all.items():
                got = got_all.get(seen_as.get(name, name))
                if got is not None and want.shape == got.shape and got.ndim >= 1:
                    _add_cosines(sums.setdefault(name, [0.0, 0, 0.0, 0.0]), got[: batch.count], want[: batch.count])
    compared = 0
    for node in model.graph.node:
        acc = sums.get(node.output[0]) if node.output else None
        if acc is None or not acc[1]:
            continue
        compared += 1
        cosine = acc[0] / acc[1]
        if not cosine >= min_cosine:  # NaN diverges too
            name = node.name or node.output[0]
            return Divergence(name, node.op_type, acc[2], acc[3], compared, cosine, min_cosine, int(acc[1]))
    return None


def _dequantized(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> the output of the QuantizeLinear -> DequantizeLinear pair it feeds: the value its consumers see.

    ONNX Runtime's Q/DQ flavour folds a Relu into its Conv (the Conv then carries the Relu's output name, and the
    quantization's clip at zero does the Relu's work), so a node's raw output is not what the graph computes next.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seen_as: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or not node.output:
            continue
        dq = next((n for n in consumers.get(node.output[0], []) if n.op_type == "DequantizeLinear"), None)
        if dq is not None and dq.output:
            seen_as.setdefault(node.input[0], dq.output[0])
    return seen_as


def _add_cosines(acc: list[float], got: np.ndarray, want: np.ndarray) -> None:
    """Add one batch's per-sample cosines, count, and largest errors to `acc`."""
    g = got.reshape(got.shape[0], -1).astype(np.float64)
    w = want.reshape(want.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1)
    both_zero = ~g.any(1) & ~w.any(1)
    cos = np.where(norms > 0, (g * w).sum(1) / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    acc[0] += float(cos.sum())
    acc[1] += g.shape[0]
    acc[2] = max(acc[2], float(np.abs(g - w).max(initial=0.0)))
    acc[3] = max(acc[3], float(np.abs(w).max(initial=0.0)))


def _run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    runner = OnnxRuntimeRunner(with_all_outputs(model).SerializeToString(), optimize=False)
    with runner:
        return runner.infer(feeds)


def _check(
    node: onnx.NodeProto, got: np.ndarray, want: np.ndarray, rtol: float, atol: float, n: int
) -> Divergence | None:
    g, w = got.astype(np.float64), want.astype(np.float64)
    g_finite, w_finite = np.isfinite(g), np.isfinite(w)
    both = g_finite & w_finite
    scale = float(np.abs(w[both]).max(initial=0.0))
    if not np.array_equal(g_finite, w_finite):  # NaN or Inf on one side only: diverged, whatever the values
        return Divergence(node.name or node.output[0], node.op_type, float("inf"), scale, n)
    err = float(np.abs(g[both] - w[both]).max(initial=0.0))
    if err > atol + rtol * scale:
        return Divergence(node.name or node.output[0], node.op_type, err, scale, n)
    return None
