"""Activation ranges for INT8, measured on the CPU with ONNX Runtime, in memory that does not grow with images.

ONNX Runtime's own histogram calibrators keep every activation of every image (measured on GhostNet-1.0x at
224: about 2.0 GB for 32 images, 7.2 GB for 128). Here each batch's activations are folded into a fixed-size
state per tensor (running min/max, or a histogram of |x| with a fixed number of bins) and dropped before the
next batch runs.

Thresholds follow NVIDIA's open re-implementation of TensorRT's calibrators
(pytorch-quantization `calib/histogram.py`; docs/reference/tensorrt.md section 4): min/max (the default: amax =
max |x|), EntropyCalibration2 (KL divergence over a 2048-bin histogram of |x|), percentile, and MSE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import onnx

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.data.inputs import Sample, batches
from ghost_deploy.errors import InputError
from ghost_deploy.precision.collectors import (
    METHODS,
    Collector,
    DerivedCollector,
    HistogramCollector,
    MinMaxCollector,
    NonFiniteError,
    ReluInputCollector,
    TensorRange,
    check_method,
    check_percentile,
    entropy_amax,
    percentile_amax,
)

__all__ = [
    "METHODS",
    "Calibration",
    "HistogramCollector",
    "MinMaxCollector",
    "NonFiniteError",
    "TensorRange",
    "calibrate",
    "entropy_amax",
    "percentile_amax",
]

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The ranges of every calibrated tensor, the method that chose `amax`, and how many images were seen."""

    ranges: dict[str, TensorRange]
    method: str
    images: int

    def amax(self) -> dict[str, float]:
        """Tensor name -> amax, in graph order (what a calibration cache or Q/DQ scales need)."""
        return {name: r.amax for name, r in self.ranges.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        ranges = {name: r.to_dict() for name, r in self.ranges.items()}
        return {"method": self.method, "images": self.images, "ranges": ranges}


def calibrate(
    model: onnx.ModelProto,
    samples: Iterable[Sample],
    tensors: Sequence[str] | None = None,
    method: str = "minmax",
    percentile: float = 99.99,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    num_bins: int = 2048,
    threads: int | None = None,
) -> Calibration:
    """Measure activation ranges of an FP32 ONNX model over `samples`, one batch at a time.

    `tensors` defaults to the graph input and every float tensor a node produces. The model runs on ONNX
    Runtime's CPU provider without graph optimisation (so intermediate names survive), with those tensors
    exposed as outputs, except the outputs of Relu and Concat nodes whose inputs are calibrated: their state
    is derived from their inputs' (DerivedCollector), which halves the data binned on GhostNet. `progress` is
    called with the number of images done after each batch; ONNX Runtime runs with `threads` (None: its default).
    """
    check_method(method)
    check_percentile(percentile)
    if batch_size < 1:
        raise InputError(f"calibration batch size {batch_size} must be at least 1")
    inferred = onnx.shape_inference.infer_shapes(model)
    input_name, input_shape = _image_input(inferred)
    names = _tensor_names(inferred, input_name, tensors)
    collectors = _collectors(inferred, names, method, num_bins)
    fetched = {n: c for n, c in collectors.items() if not isinstance(c, DerivedCollector)}
    # only the serialized copy is kept: every ModelProto copy is the size of the weights
    serialized = _with_outputs(inferred, [n for n in fetched if n != input_name]).SerializeToString()
    del inferred
    runner = OnnxRuntimeRunner(serialized, optimize=False, threads=threads)
    with runner:
        images = _collect(runner, _checked(samples, input_shape), input_name, fetched, batch_size, progress)
    if images == 0:
        raise InputError("no calibration image was given; give a folder or file with at least one image")
    return Calibration({n: c.result(method, percentile) for n, c in collectors.items()}, method, images)


def _collectors(model: onnx.ModelProto, names: Sequence[str], method: str, num_bins: int) -> dict[str, Collector]:
    """A collector per tensor, in the order of `names`; a Relu or Concat whose inputs are calibrated derives its own."""
    relu_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Relu" and n.output[0] in names}
    collectors: dict[str, Collector] = {}
    for n in names:
        if method == "minmax":
            collectors[n] = MinMaxCollector(n)
        else:
            collectors[n] = ReluInputCollector(num_bins, n) if n in relu_inputs else HistogramCollector(num_bins, n)
    for node in model.graph.node:  # graph order: the inputs are settled before the node's output
        out = node.output[0] if node.output else ""
        if out not in collectors or not node.input or any(i not in collectors for i in node.input):
            continue
        direct = isinstance(collectors[node.input[0]], (ReluInputCollector, MinMaxCollector))
        if node.op_type == "Concat" or (node.op_type == "Relu" and direct):
            collectors[out] = DerivedCollector(node.op_type, [collectors[i] for i in node.input], out)
    return collectors


def _collect(
    runner: OnnxRuntimeRunner,
    samples: Iterable[Sample],
    input_name: str,
    collectors: dict[str, Collector],
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Run every batch and fold its tensors into the collectors; returns the number of images."""
    fixed = runner.input_specs()[0].fixed_batch
    rows = fixed or batch_size  # a fixed batch dimension decides the batch size
    images = 0
    for batch in batches(samples, input_name, rows, pad=fixed is not None):
        outputs = _run(runner, batch.feeds, list(collectors), input_name)
        try:
            _fold(outputs, collectors, batch.count, len(batch.feeds[input_name]))
        except NonFiniteError as exc:
            raise NonFiniteError(
                f"{exc} for calibration images {images + 1} to {images + batch.count}; the FP32 model "
                "overflows on them: check the preprocessing and the weights"
            ) from None
        images += batch.count
        if progress is not None:
            progress(images)
    return images


def _image_input(model: onnx.ModelProto) -> tuple[str, list[int | None]]:
    """The name and per-sample shape (None where dynamic) of the model's only float32 input."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        found = ", ".join(
            f"{i.name} ({onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)})" for i in inputs
        )
        raise InputError(
            f"calibration needs a model with one float32 input, got: {found or 'none'}; "
            "calibrate the FP32 image classifier"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]


def _tensor_names(model: onnx.ModelProto, input_name: str, tensors: Sequence[str] | None) -> list[str]:
    """The tensors to calibrate, in graph order for the default; validated when given."""
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    produced = [name for node in g.node for name in node.output if name]
    if tensors is None:
        return list(dict.fromkeys([input_name, *(n for n in produced if types.get(n) in _FLOAT_TYPES)]))
    known = {input_name, *produced}
    names = list(dict.fromkeys(tensors))
    if not names:
        raise InputError("the list of tensors to calibrate is empty; give at least one name or none for all")
    for name in names:
        if name not in known:
            raise InputError(
                f"tensor {name!r} is neither the model input nor a node output; "
                f"valid names include {', '.join(repr(n) for n in [input_name, *produced][:5])}"
            )
        if types.get(name, onnx.TensorProto.FLOAT) not in _FLOAT_TYPES:
            raise InputError(f"tensor {name!r} is not a float tensor; only float activations take INT8 ranges")
    return names


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of a shape-inferred model with `names` added to its graph outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    infos = {vi.name: vi for vi in out.graph.value_info}
    existing = {o.name for o in out.graph.output}
    for name in names:
        if name not in existing:
            # a tensor shape inference could not type: declare it float, shape unknown
            vi = infos.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            out.graph.output.append(vi)
    return out


def _checked(samples: Iterable[Sample], shape: list[int | None]) -> Iterator[Sample]:
    """Pass samples through, rejecting one whose shape does not fit the model or that holds NaN or Inf."""
    for sample in samples:
        got = list(sample.array.shape)
        if len(got) != len(shape) or any(want is not None and g != want for g, want in zip(got, shape, strict=False)):
            want_text = "x".join("?" if d is None else str(d) for d in shape)
            raise InputError(
                f"calibration sample {sample.name!r} has shape {'x'.join(map(str, got))}, the model "
                f"expects {want_text}; use the model's preprocessing (input size)"
            )
        if not np.isfinite(sample.array).all():
            raise NonFiniteError(f"calibration sample {sample.name!r} holds NaN or Inf; check the input data")
        yield sample


def _run(runner: OnnxRuntimeRunner, feeds: dict[str, np.ndarray], names: list[str], input_name: str) -> dict[str, Any]:
    """One batch's requested tensors; the input is taken from the feed rather than fetched."""
    fetch = [n for n in names if n != input_name]
    outputs = dict(zip(fetch, runner.session.run(fetch, feeds), strict=True)) if fetch else {}
    if input_name in names:
        outputs[input_name] = feeds[input_name]
    return outputs


def _fold(outputs: dict[str, Any], collectors: dict[str, Collector], count: int, rows: int) -> None:
    """Fold each tensor of one batch into its collector, releasing it at once; padding rows stay out."""
    while outputs:
        name, value = outputs.popitem()
        array = np.asarray(value)
        if count < rows:  # the padded last batch of a fixed-batch model
            if array.ndim == 0 or array.shape[0] != rows:
                raise InputError(
                    f"tensor {name!r} is not batch-major, so the padding of the last batch cannot be left out; "
                    f"give a multiple of {rows} images or calibrate a dynamic-batch model"
                )
            array = array[:count]
        collectors[name].collect(array)
        del array, value
