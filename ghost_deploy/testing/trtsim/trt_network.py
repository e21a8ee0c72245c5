"""INetworkDefinition, ITensor, OnnxParser and ParserError: parsing fills the network from the ONNX model."""

from __future__ import annotations

import dataclasses
import operator
import os
from typing import Any

from ghost_deploy.testing.trtsim import onnx_graph, qdq_rules
from ghost_deploy.testing.trtsim.enums import distinct
from ghost_deploy.testing.trtsim.onnx_graph import LayerInfo, TensorInfo
from ghost_deploy.testing.trtsim.sim import Sim, State, as_bytes
from ghost_deploy.testing.trtsim.trt_basic import make_dims

# ONNX TensorProto element type -> TensorRT DataType member (None: TensorRT has no such I/O type)
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8", 16: "BF16"}
_EXPLICIT_BATCH_MESSAGE = (
    'Assertion failed: !mImporterCtx.network()->hasImplicitBatchDimension() && "This version of the ONNX parser '
    "only supports TensorRT INetworkDefinitions with an explicit batch dimension. Please ensure the network was "
    'created using the EXPLICIT_BATCH NetworkDefinitionCreationFlag."'
)


class NetworkState(State):
    """INetworkDefinition: what `create_network(flags)` made and what the parser put in it."""

    def __init__(self, sim: Sim, flags: int) -> None:
        super().__init__(sim)
        self._flags = flags
        members = distinct(sim.enums["NetworkDefinitionCreationFlag"])  # bit k is 1 << the C++ enumerator k
        names = {m.name for m in members if flags >> int(m) & 1}
        unknown = flags & ~sum(1 << int(m) for m in members)
        if unknown:
            raise sim.unsupported(f"create_network with unknown flag bits {unknown:#x}")
        self.flag_names = tuple(sorted(names))
        # s1: EXPLICIT_BATCH is required for ONNX on 8.x, ignored on 10.x (always explicit), removed on 11.x
        self.explicit_batch = sim.major >= 10 or "EXPLICIT_BATCH" in names
        # s1: STRONGLY_TYPED exists since 9.0; on 11 "Strongly typed mode is always enabled"
        self.strongly_typed = sim.major >= 11 or "STRONGLY_TYPED" in names
        self.model: Any = None
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.layers: list[LayerInfo] = []
        self._tensors: dict[str, Any] = {}

    @property
    def num_inputs(self) -> int:
        """Network inputs."""
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        """Network outputs."""
        return len(self.outputs)

    @property
    def num_layers(self) -> int:
        """Layers (one per ONNX node)."""
        return len(self.layers)

    @property
    def has_implicit_batch_dimension(self) -> bool:
        """True for a network made without EXPLICIT_BATCH on 8.x."""
        return not self.explicit_batch

    @property
    def flags(self) -> int:
        """The creation flags as a bit mask."""
        return self._flags

    def get_flag(self, flag: Any) -> bool:
        """Whether a creation flag was set."""
        return self._sim.expect_enum(flag, "NetworkDefinitionCreationFlag").name in self.flag_names

    def _tensor(self, info: TensorInfo) -> Any:
        if info.name not in self._tensors:
            self._tensors[info.name] = self._sim.new("ITensor", TensorState(self._sim, info))
        return self._tensors[info.name]

    def get_input(self, index: int) -> Any:
        """The index-th input tensor (None when out of range)."""
        return self._tensor(self.inputs[index]) if 0 <= index < len(self.inputs) else None

    def get_output(self, index: int) -> Any:
        """The index-th output tensor (None when out of range)."""
        return self._tensor(self.outputs[index]) if 0 <= index < len(self.outputs) else None


class TensorState(State):
    """ITensor of a network input or output."""

    def __init__(self, sim: Sim, info: TensorInfo) -> None:
        super().__init__(sim)
        self._info = info

    @property
    def name(self) -> str:
        """Tensor name (the ONNX name)."""
        return self._info.name

    @property
    def shape(self) -> Any:
        """Dims, -1 where dynamic."""
        return make_dims(self._sim, self._info.shape)

    @property
    def dtype(self) -> Any:
        """DataType."""
        return self._sim.member("DataType", self._info.dtype)

    @property
    def is_network_input(self) -> bool:
        """Whether it is a network input."""
        return self._info.is_input

    @property
    def is_network_output(self) -> bool:
        """Whether it is a network output."""
        return not self._info.is_input


@dataclasses.dataclass(frozen=True)
class ParseProblem:
    """One parser error."""

    code: str
    desc: str
    node: int = -1
    node_name: str = ""
    node_operator: str = ""
    func: str = "parse"


class ParserErrorState(State):
    """ParserError: code(), desc(), node() and, from 10.x, node_name()/node_operator()."""

    def __init__(self, sim: Sim, problem: ParseProblem) -> None:
        super().__init__(sim)
        self._p = problem

    def code(self) -> Any:
        """The ErrorCode."""
        return self._sim.member("ErrorCode", self._p.code)

    def desc(self) -> str:
        """What went wrong."""
        return self._p.desc

    def node(self) -> int:
        """Index of the ONNX node, -1 when none."""
        return self._p.node

    def node_name(self) -> str:
        """Name of the ONNX node."""
        return self._p.node_name

    def node_operator(self) -> str:
        """Operator of the ONNX node."""
        return self._p.node_operator

    def op_str(self) -> str:
        """onnx2trt::parserErrorStr."""
        p = self._p
        if self._sim.major < 10:
            return f"In node {p.node} ({p.func}): {p.code}: {p.desc}"
        return (
            f"In node {p.node} with name: {p.node_name} and operator: {p.node_operator} ({p.func}): {p.code}: {p.desc}"
        )

    op_repr = op_str


class ParserState(State):
    """OnnxParser(network, logger)."""

    def __init__(self, sim: Sim, network: Any, logger: Any) -> None:
        super().__init__(sim)
        self._network: NetworkState = network._trtsim
        self._logger = logger
        self._problems: list[ParseProblem] = []
        self._flags: set[str] = set()

    @classmethod
    def construct(cls, sim: Sim, owner: str, network: Any, logger: Any) -> ParserState:
        """`OnnxParser(network, logger)`."""
        return cls(sim, sim.expect(network, "INetworkDefinition"), sim.expect(logger, "ILogger"))

    @property
    def num_errors(self) -> int:
        """Errors of the last parse."""
        return len(self._problems)

    def get_error(self, index: int) -> Any:
        """The index-th error (None when out of range)."""
        if not 0 <= index < len(self._problems):
            return None
        return self._sim.new("ParserError", ParserErrorState(self._sim, self._problems[index]))

    def clear_errors(self) -> None:
        """Forget the errors."""
        self._problems.clear()

    def set_flag(self, flag: Any) -> None:
        """Set an OnnxParserFlag."""
        self._flags.add(self._sim.expect_enum(flag, "OnnxParserFlag").name)

    def clear_flag(self, flag: Any) -> None:
        """Clear an OnnxParserFlag."""
        self._flags.discard(self._sim.expect_enum(flag, "OnnxParserFlag").name)

    def get_flag(self, flag: Any) -> bool:
        """Whether an OnnxParserFlag is set."""
        return self._sim.expect_enum(flag, "OnnxParserFlag").name in self._flags

    @property
    def flags(self) -> int:
        """The parser flags as a bit mask."""
        return sum(1 << int(self._sim.member("OnnxParserFlag", n)) for n in self._flags)

    def parse(self, model: Any, path: Any = None) -> bool:
        """Parse a serialized ONNX model."""
        import onnx

        data = as_bytes(model)
        try:
            proto = onnx.load_model_from_string(data)
        except Exception as exc:  # protobuf's DecodeError, or what onnx raises on the way
            return self._fail(ParseProblem("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model: {exc}"))
        return self._import(proto, None if path is None else os.path.dirname(str(path)))

    def parse_from_file(self, model: str) -> bool:
        """Parse the ONNX file at `model` (external data beside it is read too)."""
        import onnx

        if not isinstance(model, str):
            from ghost_deploy.testing.trtsim.binding import ArgTypeError

            raise ArgTypeError("str")
        if not os.path.isfile(model):
            return self._fail(ParseProblem("MODEL_DESERIALIZE_FAILED", f"Failed to open file: {model}"))
        try:
            proto = onnx.load(model)
        except Exception as exc:  # a file that is no ONNX: protobuf raises several types
            return self._fail(ParseProblem("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model {model}: {exc}"))
        return self._import(proto, os.path.dirname(model))

    def _fail(self, problem: ParseProblem) -> bool:
        self._problems.append(problem)
        self._sim.log(self._logger, "ERROR", f"ModelImporter.cpp: {ParserErrorState(self._sim, problem).op_str()}")
        return False

    def _import(self, proto: Any, base_dir: str | None) -> bool:
        self._problems.clear()
        if not self._network.explicit_batch:  # s1: EXPLICIT_BATCH "required for ONNX" before 10.0
            return self._fail(ParseProblem("INVALID_VALUE", _EXPLICIT_BATCH_MESSAGE, func="importModel"))
        if self._network.model is not None:
            raise self._sim.unsupported("parsing a second ONNX model into one network")
        problem = (
            onnx_graph.check(proto, base_dir)
            or onnx_graph.check_support(proto, self._sim.spec.onnx, self._sim.version)
            or qdq_rules.check_qdq(proto, self._sim.major)
        )
        if problem is not None:
            return self._fail(ParseProblem(*problem))
        inputs, outputs, layers = onnx_graph.describe(proto)
        typed = []
        for info in inputs + outputs:
            dtype = _trt_dtype(self._sim, info.dtype)
            if dtype is None:
                code = "UNSUPPORTED_NODE_DATATYPE" if self._sim.major >= 10 else "UNSUPPORTED_NODE"
                return self._fail(
                    ParseProblem(code, f"tensor {info.name}: ONNX type {info.dtype} has no TensorRT type")
                )
            typed.append(dataclasses.replace(info, dtype=dtype))
        self._network.inputs = [t for t in typed if t.is_input]
        self._network.outputs = [t for t in typed if not t.is_input]
        self._network.layers = layers
        self._network.model = proto
        return True


def _trt_dtype(sim: Sim, onnx_type: str) -> str | None:
    name = _ONNX_TO_TRT.get(int(onnx_type))  # describe() gives the ONNX element type number
    if name == "INT64" and not sim.has_member("DataType", "INT64"):
        name = "INT32"  # onnx-tensorrt 8.x casts INT64 down to INT32 (no INT64 DataType before 10)
    return name if name is not None and sim.has_member("DataType", name) else None


def network_flags_value(flags: Any) -> int:
    """`create_network(flags)` takes an int (a bit mask); an enum member passes as its integer value."""
    from ghost_deploy.testing.trtsim.binding import ArgTypeError

    try:
        return operator.index(flags)
    except TypeError:
        raise ArgTypeError("int") from None
