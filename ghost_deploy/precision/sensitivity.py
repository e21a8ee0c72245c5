"""INT8 sensitivity: which quantized layers cost the most agreement with FP32, and automatic exclusion.

GhostNet's cheap depthwise convolutions are known to be fragile in INT8. Each layer is quantized alone
(everything else FP32) and ranked by the top-1 agreement and cosine it costs on the calibration data (or a
validation folder), never on the evaluation folder, so the accuracy preview stays an honest estimate.
`auto_exclude` then keeps the worst layers in higher precision until the whole model meets the limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from ghost_deploy.backends.base import INPUT_NAME
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.data.inputs import Sample, batches
from ghost_deploy.precision.quantize import Range, qdq_for_onnxruntime, qdq_for_tensorrt, select_nodes
from ghost_deploy.targets import target as target_of

Builder = Callable[..., tuple[onnx.ModelProto, Any]]


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """What quantizing one layer alone costs against FP32."""

    node: str
    op_type: str
    agreement: float
    cosine_mean: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def builder_for(target: str) -> Builder:
    """The Q/DQ builder of an INT8 target."""
    return qdq_for_onnxruntime if target_of(target).qdq == "onnxruntime" else qdq_for_tensorrt


def _logits(model: onnx.ModelProto, samples: Sequence[Sample], batch: int) -> np.ndarray:
    with OnnxRuntimeRunner(model.SerializeToString()) as runner:
        name = runner.output_specs()[0].name
        return np.concatenate([runner.infer(b.feeds)[name][: b.count] for b in batches(samples, INPUT_NAME, batch)])


def _batch_size(model: onnx.ModelProto) -> int:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else 8


def _score(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    agreement = float((ref.argmax(1) == out.argmax(1)).mean())
    cos = (ref * out).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30)
    return agreement, float(cos.mean())


def layer_sensitivity(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, Range],
    samples: Sequence[Sample],
    target: str = "onnx-int8",
    progress: Callable[[int, int], None] | None = None,
) -> list[LayerCost]:
    """Quantize each layer alone and rank the layers, most costly first."""
    batch = _batch_size(fp32)
    ref = _logits(fp32, samples, batch)
    nodes, _ = select_nodes(fp32)
    names = [n.name for n in nodes]
    build = builder_for(target)
    costs = []
    for i, node in enumerate(nodes):
        model, _ = build(fp32, ranges, exclude_nodes=[n for n in names if n != node.name])
        agreement, cosine = _score(ref, _logits(model, samples, batch))
        costs.append(LayerCost(node.name, node.op_type, agreement, cosine))
        if progress is not None:
            progress(i + 1, len(nodes))
    return sorted(costs, key=lambda c: (c.agreement, c.cosine_mean))


def auto_exclude(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, Range],
    samples: Sequence[Sample],
    min_agreement: float,
    target: str = "onnx-int8",
    already: Collection[str] = (),
    exclude_op_types: Collection[str] = (),
    ranking: Sequence[LayerCost] | None = None,
) -> dict[str, Any]:
    """Exclude the most sensitive layers (1, 2, 4, ... of them) until agreement reaches `min_agreement`.

    `ranking` may be given when `layer_sensitivity` already ran on the same samples.
    """
    batch = _batch_size(fp32)
    ref = _logits(fp32, samples, batch)
    build = builder_for(target)
    ranking = ranking if ranking is not None else layer_sensitivity(fp32, ranges, samples, target)
    order = [c.node for c in ranking if c.node not in already]
    tried = []
    count = 0
    while True:
        excluded = [*already, *order[:count]]
        model, _ = build(fp32, ranges, exclude_nodes=excluded, exclude_op_types=exclude_op_types)
        agreement, cosine = _score(ref, _logits(model, samples, batch))
        tried.append({"excluded": count, "agreement": agreement, "cosine_mean": cosine})
        if agreement >= min_agreement or count >= len(order):
            break
        count = 1 if count == 0 else min(2 * count, len(order))
    return {
        "min_agreement": min_agreement,
        "met": agreement >= min_agreement,
        "excluded": order[:count],
        "tried": tried,
        "ranking": [c.to_dict() for c in ranking[:20]],
        "measured_on": f"{len(samples)} calibration inputs",
    }
