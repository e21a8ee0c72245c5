"""What TensorRT's ONNX parser refuses in a QuantizeLinear / DequantizeLinear node (explicit quantization).

The rules of onnx/onnx-tensorrt's `QuantDequantLinearHelper`, read in its release branches (tensorrt.md s5):
`builtin_op_importers.cpp` of 8.5-GA (8.6-GA is the same) and `onnxOpImporters.cpp` of 10.1-GA (10.x, 11).

- q1: input 0 of type UINT8 is refused (`notInvalidType(inputs.at(0), {"UINT8"})`, kUNSUPPORTED_NODE), and so
  is a QuantizeLinear's UINT8 zero point (`notInvalidType(inputs.at(2), {"UINT8"})`).
- q2: 8.x needs exactly 3 inputs ("This version of TensorRT requires 3 inputs for the DequantizeLinear
  operator."); 10.x needs at least 2. kINVALID_NODE.
- q3: constant scales: at least one coefficient, all positive ("Scale coefficients must all be positive").
- q4: constant zero points are all zeros ("TRT only supports symmetric quantization - zeroPt must be all
  zeros" on 8.x; "TensorRT only supports symmetric quantization. The zero point ... must be all zeros." on
  10.x), with as many values as the scale.
- q5: more than one scale is per-channel: the input's dimension on `axis` (0 when not given) must equal the
  number of scales ("The number of scales is not equal to the number of output channels.").
- Input 0 may be an INT8 initializer (a weight stored quantized, as ModelOpt's `dq_only` writes it): the parser
  imports INT8 initializers as kINT8 weights (8.5-GA `onnx2trt_utils.cpp::convertOnnxWeights` lists INT8 among
  the types read as they are) and `convertToTensor` makes them a constant, on every version.
Where the shape or type of a tensor is unknown here (shape inference is best effort), the rule is not judged.
"""

from __future__ import annotations

from typing import Any

from ghost_deploy.testing.trtsim.onnx_graph import QDQ_OPS, layer_name

UINT8 = 2  # ONNX TensorProto.UINT8
Problem = tuple[str, str, int, str, str]


def check_qdq(proto: Any, major: int) -> Problem | None:
    """None when every Q/DQ node of `proto` imports on TensorRT `major`, else the parser's error (onnx_graph.check)."""
    nodes = [(i, n) for i, n in enumerate(proto.graph.node) if n.op_type in QDQ_OPS]
    if not nodes:
        return None
    consts, types, shapes = _facts(proto)
    for index, node in nodes:
        problem = _check_node(node, major, consts, types, shapes)
        if problem is not None:
            code, desc = problem
            return (code, desc, index, layer_name(node), node.op_type)
    return None


def _facts(proto: Any) -> tuple[dict[str, Any], dict[str, int], dict[str, list[int]]]:
    """Constant values, element types and (known) shapes of the model's tensors."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # best effort: what cannot be inferred is not judged
        graph = proto.graph
    types, shapes = {}, {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
    consts = {}
    for init in proto.graph.initializer:
        consts[init.name] = numpy_helper.to_array(init)
        types[init.name], shapes[init.name] = init.data_type, list(init.dims)
    return consts, types, shapes


def _check_node(
    node: Any, major: int, consts: dict[str, Any], types: dict[str, int], shapes: dict[str, list[int]]
) -> tuple[str, str] | None:
    inputs = list(node.input)
    if types.get(inputs[0]) == UINT8 or (
        node.op_type == "QuantizeLinear" and len(inputs) > 2 and types.get(inputs[2]) == UINT8
    ):  # q1
        return (
            "UNSUPPORTED_NODE",
            "Found invalid input type of UINT8" if major < 10 else "Found unsupported input type of UINT8",
        )
    if major < 10 and len(inputs) != 3:  # q2
        return "INVALID_NODE", "This version of TensorRT requires 3 inputs for the DequantizeLinear operator."
    if len(inputs) < 2:
        return "INVALID_NODE", (
            "This version of TensorRT requires at least 2 inputs for the QuantizeLinear/DequantizeLinear operator."
        )
    scale = consts.get(inputs[1])
    if scale is not None and (scale.size == 0 or not (scale > 0).all()):  # q3
        return "INVALID_NODE", "Scale coefficients must all be positive"
    zero = consts.get(inputs[2]) if len(inputs) > 2 else None
    if zero is not None and zero.any():  # q4
        return "INVALID_NODE", (
            "TRT only supports symmetric quantization - zeroPt must be all zeros"
            if major < 10
            else "TensorRT only supports symmetric quantization. The zero point for the "
            "QuantizeLinear/DequantizeLinear operator must be all zeros."
        )
    if zero is not None and scale is not None and zero.size != scale.size:
        return "INVALID_NODE", "The scale and zero-point must have the same size"
    data = shapes.get(inputs[0])
    if scale is not None and scale.size != 1 and data is not None:  # q5
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if not -len(data) <= axis < len(data) or data[axis] != scale.size:
            return "INVALID_NODE", "The number of scales is not equal to the number of output channels."
    return None
