"""Every quantized layer's own INT8 error, measured together in one run, and models to score quickly.

The probe model is the FP32 graph plus, for each quantized layer of a Q/DQ graph, a copy of that layer with the
Q/DQ nodes of its inputs (activation, weight, bias), reading the FP32 graph's tensors. One run over the data
then gives, for all layers at once, the error that quantizing each layer alone adds to its output when its
input is exact: `layer_errors`, the noise-to-signal ratio sum((y_q - y)^2) / sum(y^2) of each layer's output.
This works for both Q/DQ flavours: the copies are taken from the built graph, whatever the builder did.

`Scorer` runs models against the FP32 logits at a large batch (a batch-1 ONNX is given a dynamic batch when
nothing in it depends on the batch size), and `without_quantization` makes a graph in which given layers read
float inputs again, without building the Q/DQ graph anew.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ghost_deploy.backends.base import INPUT_NAME
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.data.inputs import Sample, batches

PREFIX = "probe"
# rows per batch when the model's batch can be made dynamic
SCORE_BATCH = 64
# a batch's probed tensors (FP32 output and quantized copy of each layer) stay under this many bytes
PROBE_BYTES = 256 << 20
# ops whose inputs or attributes may carry the batch size: a graph with one keeps its fixed batch
_BATCH_BOUND = {"Reshape", "Expand", "Tile", "Shape", "ConstantOfShape", "Range", "Resize", "Slice", "Split"}


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy with a dynamic batch dimension, when the model has a fixed one and no op that could depend on it."""
    dims = [io.type.tensor_type.shape.dim for io in [*model.graph.input, *model.graph.output]]
    if not all(d and d[0].HasField("dim_value") for d in dims):
        return None
    constants = {i.name: i for i in model.graph.initializer}
    if any(n.op_type in _BATCH_BOUND and not _off_batch_slice(n, constants) for n in model.graph.node):
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for io in [*out.graph.input, *out.graph.output]:
        io.type.tensor_type.shape.dim[0].dim_param = "batch"
    del out.graph.value_info[:]  # shapes inferred with the fixed batch
    return out


def _off_batch_slice(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """A Slice on constant, non-negative axes other than the batch's (a channel Slice)."""
    if node.op_type != "Slice" or len(node.input) < 4 or node.input[3] not in constants:
        return False
    axes = numpy_helper.to_array(constants[node.input[3]])
    return bool(axes.size) and bool((axes > 0).all())


def _runnable(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with a dynamic batch where possible, and the batch size to run it at."""
    dynamic = dynamic_batch(model)
    if dynamic is not None:
        return dynamic, SCORE_BATCH
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return model, dim.dim_value if dim.HasField("dim_value") else SCORE_BATCH


class Scorer:
    """Top-1 agreement and mean cosine of models against the FP32 model's logits on fixed samples."""

    def __init__(self, fp32: onnx.ModelProto, samples: Sequence[Sample], threads: int | None = None) -> None:
        self.samples, self.threads = list(samples), threads
        self.runs = 0
        self.reference = self.logits(fp32)

    def logits(self, model: onnx.ModelProto) -> np.ndarray:
        """The first output of `model` on every sample."""
        runnable, size = _runnable(model)
        with OnnxRuntimeRunner(runnable.SerializeToString(), threads=self.threads) as runner:
            name = runner.output_specs()[0].name
            out = [runner.infer(b.feeds)[name][: b.count] for b in batches(self.samples, INPUT_NAME, size)]
        self.runs += 1
        return np.concatenate(out)

    def score(self, model: onnx.ModelProto) -> tuple[float, float]:
        """(top-1 agreement, mean cosine) of `model` against the FP32 logits."""
        found = self.measure(model)
        return found.agreement, found.cosine_mean

    def measure(self, model: onnx.ModelProto) -> Score:
        """Top-1 agreement, mean and minimum per-sample cosine of `model` against the FP32 logits."""
        ref, out = self.reference, self.logits(model)
        agreement = float((ref.argmax(1) == out.argmax(1)).mean())
        norms = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30)
        cosine = (ref * out).sum(1) / norms
        return Score(agreement, float(cosine.mean()), float(cosine.min(initial=1.0)))


@dataclasses.dataclass(frozen=True)
class Score:
    """What a model gives against the FP32 logits: top-1 agreement, mean and minimum per-sample cosine."""

    agreement: float
    cosine_mean: float
    cosine_min: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def probe_model(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, layers: Collection[str]
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """The FP32 graph plus a quantized copy of each layer fed by FP32 tensors; layer -> (FP32 output, copy's).

    A copy compares with the FP32 node of the same name (ONNX Runtime's quantizer may give a Conv the name of
    the Relu it removed: the FP32 node's own output is the like-for-like tensor).
    """
    float_tensors = {i.name for i in fp32.graph.input} | {o for n in fp32.graph.node for o in n.output}
    float_nodes = {n.name: n for n in fp32.graph.node}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    out = onnx.ModelProto()
    out.CopyFrom(fp32)
    del out.opset_import[:]
    out.opset_import.extend(quantized.opset_import)
    known = {i.name for i in out.graph.initializer}
    out.graph.initializer.extend(i for i in quantized.graph.initializer if i.name not in known)
    pairs: dict[str, tuple[str, str]] = {}
    for node in quantized.graph.node:
        if node.name not in layers or node.name not in float_nodes:
            continue
        chain = [*_input_chain(node, producers, float_tensors), node]
        tag = f"{PREFIX}{len(pairs)}/"
        renamed = {o: tag + o for n in chain for o in n.output}
        for original in chain:
            copy = onnx.NodeProto()
            copy.CopyFrom(original)
            copy.name = tag + original.name
            copy.input[:] = [renamed.get(i, i) for i in original.input]
            copy.output[:] = [renamed[o] for o in original.output]
            out.graph.node.append(copy)
        pairs[node.name] = (float_nodes[node.name].output[0], renamed[node.output[0]])
    del out.graph.output[:]
    for float_out, copy_out in pairs.values():
        out.graph.output.extend(
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in (float_out, copy_out)
        )
    return out, pairs


def _input_chain(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], stop: set[str]) -> list[onnx.NodeProto]:
    """The nodes between `node` and the FP32 tensors it reads (its Q/DQ inputs), in graph order."""
    chain: dict[str, onnx.NodeProto] = {}  # by first output: every node here has one
    todo = [i for i in node.input if i]
    while todo:
        name = todo.pop()
        producer = producers.get(name)
        if name in stop or producer is None or producer.output[0] in chain:
            continue
        chain[producer.output[0]] = producer
        todo.extend(i for i in producer.input if i)
    order = {o: i for i, o in enumerate(producers)}  # producers were listed in the graph's (sorted) order
    return [chain[o] for o in sorted(chain, key=order.__getitem__)]


def layer_errors(
    fp32: onnx.ModelProto,
    quantized: onnx.ModelProto,
    layers: Collection[str],
    samples: Sequence[Sample],
    threads: int | None = None,
) -> dict[str, float]:
    """Each layer's noise-to-signal ratio when it alone is quantized with exact inputs, from one run."""
    model, pairs = probe_model(fp32, quantized, layers)
    runnable, size = _runnable(model)
    noise, signal = dict.fromkeys(pairs, 0.0), dict.fromkeys(pairs, 0.0)
    fetch = [t for pair in pairs.values() for t in pair]
    runner = OnnxRuntimeRunner(runnable.SerializeToString(), threads=threads)
    with runner:
        for feeds, count in _probe_batches(runner, samples, size, fetch):
            values = dict(zip(fetch, runner.session.run(fetch, feeds), strict=True))
            for layer, (float_out, copy_out) in pairs.items():
                ref = values.pop(float_out)[:count].astype(np.float64)
                noise[layer] += float(((values.pop(copy_out)[:count] - ref) ** 2).sum())
                signal[layer] += float((ref**2).sum())
    return {layer: noise[layer] / signal[layer] if signal[layer] > 0 else 0.0 for layer in pairs}


def _probe_batches(
    runner: OnnxRuntimeRunner, samples: Sequence[Sample], size: int, fetch: list[str]
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Batches small enough that every probed tensor of one batch fits in PROBE_BYTES (sized on the first row)."""
    if runner.input_specs()[0].fixed_batch is None and samples:
        one = next(batches(samples[:1], INPUT_NAME, 1))
        per_row = sum(v.nbytes for v in runner.session.run(fetch, one.feeds))
        size = max(1, min(size, PROBE_BYTES // max(per_row, 1)))
    for batch in batches(samples, INPUT_NAME, size):
        yield batch.feeds, batch.count


def without_quantization(quantized: onnx.ModelProto, fp32: onnx.ModelProto, layers: Collection[str]) -> onnx.ModelProto:
    """A copy of the Q/DQ graph where `layers` read their FP32 inputs (activation through the float graph's own
    nodes where the quantizer removed one, weights and bias as FP32 initializers): an estimate of excluding them
    that needs no new build. Only ranks layers; what is kept is built by the builder."""
    float_nodes = {n.name: n for n in fp32.graph.node if n.name in layers}
    out = onnx.ModelProto()
    out.CopyFrom(quantized)
    producers = {o: n for n in out.graph.node for o in n.output}
    float_producers = {o: n for n in fp32.graph.node for o in n.output}
    weights = {i.name: i for i in fp32.graph.initializer}
    taken = {i.name for i in out.graph.initializer} | set(producers)
    restored: dict[str, onnx.NodeProto] = {}
    for node in out.graph.node:
        original = float_nodes.get(node.name)
        if original is None:
            continue
        inputs = []
        for name in original.input:
            if name in weights:  # the FP32 weight or bias, under its own name unless the Q/DQ graph reuses it
                inputs.append(_float_weight(out, weights[name], taken))
            else:
                inputs.append(_float_tensor(name, producers, float_producers, restored))
        node.input[:] = inputs
    after = {producers[tensor].name: node for tensor, node in restored.items()}
    nodes = list(out.graph.node)
    del out.graph.node[:]
    for node in nodes:  # each restored activation right after the node whose output it reads: still sorted
        out.graph.node.append(node)
        if node.name in after:
            out.graph.node.append(after[node.name])
    return out


def _float_weight(model: onnx.ModelProto, weight: onnx.TensorProto, taken: set[str]) -> str:
    """The name under which `model` holds the FP32 `weight`, added once (renamed where the name is taken by
    something else, such as ONNX Runtime's DequantizeLinear of a quantized bias)."""
    existing = next((i for i in model.graph.initializer if i.name == weight.name), None)
    if existing is not None and existing.data_type == weight.data_type and existing.dims == weight.dims:
        return weight.name
    name = weight.name if weight.name not in taken else f"{weight.name}_{PREFIX}_float"
    if name not in taken:
        copy = onnx.TensorProto()
        copy.CopyFrom(weight)
        copy.name = name
        model.graph.initializer.append(copy)
        taken.add(name)
    return name


def _float_tensor(
    name: str,
    producers: dict[str, onnx.NodeProto],
    float_producers: dict[str, onnx.NodeProto],
    restored: dict[str, onnx.NodeProto],
) -> str:
    """`name` with its FP32 values in the Q/DQ graph: as it is, or through a copy of the FP32 producer when the
    quantizer replaced that node (a removed Relu whose name the Conv before it took)."""
    before, now = float_producers.get(name), producers.get(name)
    if before is None or now is None or before.op_type == now.op_type:
        return name
    if name not in restored:
        copy = onnx.NodeProto()
        copy.CopyFrom(before)
        copy.name = f"{before.name}_{PREFIX}_float"
        copy.input[0] = name
        copy.output[:] = [f"{name}_{PREFIX}_float"]
        restored[name] = copy
    return str(restored[name].output[0])
