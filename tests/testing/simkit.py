"""Helpers for the trtsim tests: tiny ONNX models and the TensorRT calls a build/run tool makes."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ghost_deploy.testing import trtsim

INPUT, OUTPUT = "input", "logits"


def _weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "conv_w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5,
        "conv_b": rng.standard_normal(8).astype(np.float32) * 0.1,
        "fc_w": rng.standard_normal((4, 8)).astype(np.float32),
        "fc_b": rng.standard_normal(4).astype(np.float32) * 0.1,
    }


def classifier(batch: int | str = 1, opset: int = 17) -> onnx.ModelProto:
    """Conv+Relu+GlobalAveragePool+Flatten+Gemm on a Bx3x8x8 input ('N' for a dynamic batch)."""
    weights = _weights(np.random.default_rng(0))
    nodes = [
        helper.make_node("Conv", [INPUT, "conv_w", "conv_b"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu_out"], ["pool_out"], name="pool"),
        helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten"),
        helper.make_node("Gemm", ["flat_out", "fc_w", "fc_b"], [OUTPUT], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _qdq(tensor: str, scale: float, nodes: list[Any], inits: list[Any]) -> str:
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{tensor}_s")]
    inits += [numpy_helper.from_array(np.array(0, np.int8), f"{tensor}_zp")]
    nodes.append(helper.make_node("QuantizeLinear", [tensor, f"{tensor}_s", f"{tensor}_zp"], [f"{tensor}_q"]))
    nodes.append(helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{tensor}_s", f"{tensor}_zp"], [f"{tensor}_dq"]))
    return f"{tensor}_dq"


def qdq_classifier() -> onnx.ModelProto:
    """The classifier with symmetric INT8 Q/DQ on the Conv and Gemm inputs (explicit quantization)."""
    model = classifier()
    nodes: list[Any] = []
    inits: list[Any] = []
    x = _qdq(INPUT, 4.0 / 127, nodes, inits)
    conv, relu, pool, flatten, fc = model.graph.node
    conv.input[0] = x
    fc_nodes: list[Any] = []
    f = _qdq("flat_out", 2.0 / 127, fc_nodes, inits)
    fc.input[0] = f
    del model.graph.node[:]
    model.graph.node.extend([*nodes, conv, relu, pool, flatten, *fc_nodes, fc])
    model.graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model


def fp16_classifier(batch: int | str = 1) -> onnx.ModelProto:
    """The classifier typed FP16 inside, FP32 at its input and output (what AutoCast with keep_io_types makes)."""
    model = classifier(batch)
    for i, tensor in enumerate(model.graph.initializer):
        model.graph.initializer[i].CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)
        )
    conv, relu, pool, flatten, fc = model.graph.node
    conv.input[0] = "input_h"
    fc.output[0] = "logits_h"
    cast_in = helper.make_node("Cast", [INPUT], ["input_h"], name="cast_in", to=TensorProto.FLOAT16)
    cast_out = helper.make_node("Cast", ["logits_h"], [OUTPUT], name="cast_out", to=TensorProto.FLOAT)
    del model.graph.node[:]
    model.graph.node.extend([cast_in, conv, relu, pool, flatten, fc, cast_out])
    onnx.checker.check_model(model)
    return model


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's output on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {INPUT: x})[0])


def batch(n: int = 1, seed: int = 1) -> np.ndarray:
    """A seeded n x 3 x 8 x 8 input."""
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


@dataclasses.dataclass
class Env:
    """One installed simulation: its modules and a logger that keeps every message."""

    simulation: trtsim.Simulation
    trt: Any
    logger: Any

    @property
    def cuda(self) -> Any:
        """pycuda.driver, after `import pycuda.autoinit` on the calling thread."""
        import pycuda.autoinit
        import pycuda.driver

        return pycuda.driver

    def errors(self) -> list[str]:
        """Messages logged at ERROR or worse."""
        severity = self.trt.ILogger.Severity
        return [m for s, m in self.logger.messages if s in (severity.ERROR, severity.INTERNAL_ERROR)]

    def warnings(self) -> list[str]:
        """Messages logged at WARNING."""
        return [m for s, m in self.logger.messages if s == self.trt.ILogger.Severity.WARNING]


def start(version: str, gpu: trtsim.SimulatedGPU | None = None) -> Env:
    """Install a simulation and make a capturing ILogger subclass of its `tensorrt`."""
    simulation = trtsim.install(version, gpu)
    trt = sys.modules["tensorrt"]

    class CaptureLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

    return Env(simulation, trt, CaptureLogger())


def network_flags(env: Env, strongly_typed: bool = False) -> int:
    """EXPLICIT_BATCH before 10 (tensorrt.md s1), STRONGLY_TYPED when asked on 10.x."""
    trt, major = env.trt, int(env.trt.__version__.split(".")[0])
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
    if strongly_typed and major == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def build(
    env: Env,
    model: onnx.ModelProto,
    flags: tuple[str, ...] = (),
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None,
    strongly_typed: bool = False,
    configure: Any = None,
    tf32: bool = False,
) -> bytes | None:
    """Parse and build like a build tool; the plan's bytes, or None when the builder refused. TF32 is on in a
    new config (tensorrt.md s10) and cleared here, as Polygraphy does, unless `tf32`: FP32 engines then equal
    ONNX Runtime."""
    trt = env.trt
    builder = trt.Builder(env.logger)
    network = builder.create_network(network_flags(env, strongly_typed))
    parser = trt.OnnxParser(network, env.logger)
    assert parser.parse(model.SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if profile is not None:
        p = builder.create_optimization_profile()
        p.set_shape(INPUT, *profile)
        config.add_optimization_profile(p)
    if configure is not None:
        configure(builder, config)
    plan = builder.build_serialized_network(network, config)
    return None if plan is None else bytes(plan)


def deserialize(env: Env, plan: bytes, host_code: bool = False, dla_core: int | None = None) -> Any:
    """runtime.deserialize_cuda_engine, optionally allowing engine host code / choosing a DLA core."""
    runtime = env.trt.Runtime(env.logger)
    if host_code:
        runtime.engine_host_code_allowed = True
    if dla_core is not None:
        runtime.DLA_core = dla_core
    return runtime.deserialize_cuda_engine(plan)


def infer(env: Env, engine: Any, x: np.ndarray, context: Any = None) -> np.ndarray:
    """Run an engine the way the product's runner does: pinned buffers, a stream, execute_async_v3."""
    cuda = env.cuda
    context = context or engine.create_execution_context()
    assert context.set_input_shape(INPUT, x.shape)
    out_shape = tuple(context.get_tensor_shape(OUTPUT))
    host_in = cuda.pagelocked_empty(x.shape, np.float32)
    host_in[...] = x
    host_out = cuda.pagelocked_empty(out_shape, np.float32)
    dev_in, dev_out = cuda.mem_alloc(host_in.nbytes), cuda.mem_alloc(host_out.nbytes)
    stream = cuda.Stream()
    context.set_tensor_address(INPUT, int(dev_in))
    context.set_tensor_address(OUTPUT, int(dev_out))
    cuda.memcpy_htod_async(dev_in, host_in, stream)
    assert context.execute_async_v3(stream.handle), env.errors()
    cuda.memcpy_dtoh_async(host_out, dev_out, stream)
    stream.synchronize()
    dev_in.free()
    dev_out.free()
    return np.array(host_out)
