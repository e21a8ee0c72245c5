"""The check every ONNX model the tool did not make itself passes before onnxsim or ONNX Runtime sees it.

An ONNX file is a program: a Loop of 2^62 iterations never ends, a ConstantOfShape of 2^40 elements or a
Resize by 10^5 asks for terabytes, a custom-domain op or opset 99 makes ONNX Runtime fail in its own words
(several lines, exit 1), an initializer whose dims claim more than its bytes hold, duplicate node names and a
graph cycle confuse onnxsim. What ghost-deploy runs is a GhostNet image classifier, so it runs only what a
GhostNet export can contain, checked on the parsed model and nothing else (`check_untrusted`):

- domains: the default ONNX domain only ("" or "ai.onnx"). No export of ours, V1, V2 or V3, FP32, FP16 or
  INT8, holds another: ONNX Runtime's `com.microsoft` ops appear only in graphs it optimised for one machine
  (it says so), which TensorRT's parser does not read; pass the un-optimised file instead.
- opsets: MIN_OPSET to the installed onnx package's newest (ONNX Runtime refuses the rest itself).
- op types: OPS, measured by exporting GhostNet V1, V2 and V3 (unfused and re-parameterised) in eval and
  training mode, BatchNorm folded and not, opsets 13, 17 and 21, to every ONNX target (`onnx`, `onnx-fp16`,
  `onnx-int8`, `ort-int8`), plus what other exporters of the same modules write (the official code's
  `x.view(x.size(0), -1)` is Shape/Gather/Unsqueeze/Concat/Reshape; timm's hard sigmoid is Clip or HardSwish)
  and ONNX Runtime's standard quantized Conv/MatMul (QLinearConv, QLinearMatMul). No Loop, If or Scan (no
  graph attribute at all), no ConstantOfShape, Expand, Tile or Range: none is in a GhostNet.
- sizes: every initializer, Constant and attribute tensor, every declared graph input, output and value_info,
  and every shape onnx's shape inference (with data propagation) derives, holds at most MAX_TENSOR_ELEMENTS
  elements (1 GiB of float32; GhostNet's largest tensor at batch 1024 and 224 px is about 2^26); a tensor's
  bytes match its dims and type; the inputs that set the output size of Resize and Pad derive from constants and
  shapes only (V2's attention resizes to another tensor's height and width), never from the data; at most
  MAX_NODES nodes.
- onnx.checker with full_check (types and shapes too) on the loaded model: SSA form, sorted nodes (a cycle is
  refused here), known ops at the declared opset.

Every refusal is one line, naming the file: InputError (exit 2), or the class the caller gives (a bundle's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import onnx
from onnx import helper

from ghost_deploy.errors import InputError

MIN_OPSET = 11
MAX_TENSOR_ELEMENTS = 1 << 28
MAX_NODES = 100_000
DOMAINS = ("", "ai.onnx")
OPS = frozenset(
    {
        # what our exports of GhostNet V1/V2/V3 contain (FP32 and FP16; Q/DQ for the INT8 targets)
        *("Conv", "Gemm", "Relu", "HardSigmoid", "Sigmoid", "Mul", "Add", "Concat", "Flatten"),
        *("GlobalAveragePool", "AveragePool", "Resize", "Constant", "Cast", "QuantizeLinear", "DequantizeLinear"),
        # unsimplified exports: BatchNorm not folded, training mode, opset-dependent forms
        *("BatchNormalization", "Dropout", "Identity", "Slice", "Unsqueeze"),
        # other exporters of the same modules (official code, timm), and a classifier's ends
        *("Shape", "Gather", "Reshape", "Squeeze", "Clip", "HardSwish", "Div", "Sub", "MatMul", "MaxPool"),
        *("ReduceMean", "Pad", "Transpose", "Softmax"),
        # ONNX Runtime's quantizer in its QOperator format (standard ONNX ops)
        *("QLinearConv", "QLinearMatMul"),
    }
)
# ops whose output size comes from an input: shape inference (with data propagation) must know it, so that
# the size is bounded (a constant, or shapes: V2's attention resizes to another tensor's height and width)
SIZE_OPS = frozenset({"Resize", "Pad"})
_TENSOR_TYPES = frozenset(
    {
        *(onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE),
        *(onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16),
        *(onnx.TensorProto.INT32, onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64),
        onnx.TensorProto.BOOL,
    }
)
_CONSTANT_ATTRIBUTES = frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"})


def first_line(text: object, limit: int = 200) -> str:
    """The first non-empty line of an error's text, trimmed to `limit` characters: messages stay one line."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[:limit] + "..."


def check_untrusted(model: onnx.ModelProto, name: str, error: type[InputError] = InputError) -> None:
    """Refuse (`error`, exit 2) a model outside what a GhostNet export contains, before anything runs it.

    Checks the allow-list of domains, opsets and op types, the declared sizes and the tensors' bytes, then
    onnx.checker (full) and the sizes shape inference derives. `name` (the file) starts every message.
    """
    try:
        _check_structure(model)
        _check_sizes(model)
        onnx.checker.check_model(model, full_check=True)
        inferred = _inferred(model)
        _check_declared([*inferred.graph.value_info, *inferred.graph.output], "tensor")
        _check_sizes_known(model)
    except _Refused as exc:
        why = "ghost-deploy runs only what a GhostNet export contains (README: Reliability)"
        raise error(f"{name}: {exc}; {why}") from None
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise error(f"{name} is not a valid ONNX model: {first_line(exc)}") from None
    except Exception as exc:  # the checker's C++ raises what it likes on a crafted model
        raise error(f"{name} is not a valid ONNX model: {type(exc).__name__}: {first_line(exc)}") from None


class _Refused(Exception):
    """One reason to refuse; `check_untrusted` adds the file's name."""


def _check_structure(model: onnx.ModelProto) -> None:
    """Domains, opset, op types, node names, graph-free attributes."""
    opset = next((o.version for o in model.opset_import if o.domain in DOMAINS), None)
    newest = onnx.defs.onnx_opset_version()
    if opset is None or not MIN_OPSET <= opset <= newest:
        raise _Refused(f"it imports ONNX opset {opset}; supported: {MIN_OPSET} to {newest}")
    if model.functions:
        raise _Refused(f"it defines model-local functions ({_show(model.functions[0].name)})")
    graph = model.graph
    if graph.sparse_initializer:
        raise _Refused("it holds sparse initializers")
    if len(graph.node) > MAX_NODES:
        raise _Refused(f"it has {len(graph.node)} nodes, more than {MAX_NODES}")
    names: set[str] = set()
    for node in graph.node:
        if node.domain not in DOMAINS:
            raise _Refused(f"node {_show(node.name)} is {_show(node.op_type)} of domain {_show(node.domain)}")
        if node.op_type not in OPS:
            raise _Refused(f"node {_show(node.name)} is a {_show(node.op_type)}, an op no GhostNet export contains")
        if node.name and node.name in names:
            raise _Refused(f"two nodes are named {_show(node.name)}")
        names.add(node.name)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise _Refused(f"node {_show(node.name)} holds a subgraph")
        if node.op_type == "Constant" and any(a.name not in _CONSTANT_ATTRIBUTES for a in node.attribute):
            raise _Refused(f"Constant {_show(node.name)} holds a value that is not a number or a tensor")


def _check_sizes(model: onnx.ModelProto) -> None:
    """Tensors within bounds and holding the bytes their dims claim; size-setting inputs constant."""
    graph = model.graph
    for tensor in graph.initializer:
        _check_tensor(tensor, f"initializer {_show(tensor.name)}")
    for node in graph.node:
        for tensor in _attribute_tensors(node):
            _check_tensor(tensor, f"the tensor of node {_show(node.name)}")
    _check_declared(graph.input, "input")
    _check_declared(graph.output, "output")
    _check_declared(graph.value_info, "tensor")


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """The shapes onnx's inference derives (data propagated) at batch 1, from the inputs alone.

    Every symbolic input dim (the batch) is set to 1, and what the file declares for inner tensors and outputs
    is dropped, so that no declared shape stands in for a derived one: a size computed from constants and
    shapes comes out as a number (bounded), one computed from the data as unknown (refused)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for output in bare.graph.output:
        output.type.tensor_type.ClearField("shape")
    for value in bare.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)


def _check_sizes_known(model: onnx.ModelProto) -> None:
    """The inputs that set the output size of SIZE_OPS derive from constants and shapes only, never from the
    data flowing through the graph (then inference bounds the size wherever it can evaluate it)."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    data = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if node.op_type in SIZE_OPS:
            sizes = [name for name in node.input[1:] if name in data]
            if sizes:
                raise _Refused(
                    f"{node.op_type} {_show(node.name)} takes its output size from {_show(sizes[0])}, "
                    "which is computed from the input's values, not from constants or shapes"
                )
        if node.op_type != "Shape" and any(name in data for name in node.input):
            data.update(node.output)


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == onnx.AttributeProto.TENSORS:
            yield from attr.tensors
        elif attr.type in (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS):
            raise _Refused(f"node {_show(node.name)} holds a sparse tensor")


def _check_tensor(tensor: onnx.TensorProto, what: str) -> None:
    """Known fixed-size type, non-negative dims, at most MAX_TENSOR_ELEMENTS, bytes matching the dims."""
    if tensor.data_type not in _TENSOR_TYPES:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in range(1, 64) else "unknown"
        raise _Refused(f"{what} has data type {tensor.data_type} ({kind}), not a numeric type")
    count = _elements(tensor.dims, what)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return  # its bytes are not here (load_onnx loads them before checking when it may)
    if tensor.raw_data:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        if len(tensor.raw_data) != count * itemsize:
            raise _Refused(
                f"{what} has dims {list(tensor.dims)} ({count} values) but holds {len(tensor.raw_data)} bytes "
                f"({count * itemsize} expected)"
            )
        return
    held = len(getattr(tensor, helper.tensor_dtype_to_field(tensor.data_type)))
    if held != count:
        raise _Refused(f"{what} has dims {list(tensor.dims)} ({count} values) but holds {held} values")


def _elements(dims: Iterable[int], what: str) -> int:
    dims = list(dims)
    if any(d < 0 for d in dims):
        raise _Refused(f"{what} has a negative dimension: {dims}")
    count = math.prod(dims)
    if count > MAX_TENSOR_ELEMENTS:
        raise _Refused(f"{what} has shape {dims[:8]}: {count} elements, more than {MAX_TENSOR_ELEMENTS}")
    return count


def _check_declared(values: Iterable[onnx.ValueInfoProto], role: str) -> None:
    """Declared shapes: the fixed dims of each tensor multiply to at most MAX_TENSOR_ELEMENTS (symbolic: 1)."""
    for value in values:
        if not value.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
        _elements(dims, f"{role} {_show(value.name)}")


def _show(name: str, limit: int = 80) -> str:
    """A name from the file, repr'd (control characters escaped) and cut to `limit` characters."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name)} characters)"


__all__ = ["DOMAINS", "MAX_NODES", "MAX_TENSOR_ELEMENTS", "MIN_OPSET", "OPS", "check_untrusted", "first_line"]
