"""Loggers, Dims, IHostMemory, the IProfiler trampoline and TensorRT's Python-level module functions."""

from __future__ import annotations

import array
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim.binding import ArgTypeError
from ghost_deploy.testing.trtsim.sim import Sim, State, as_shape

_LETTERS = {"INTERNAL_ERROR": "F", "ERROR": "E", "WARNING": "W", "INFO": "I", "VERBOSE": "V"}


class TrampolineState(State):
    """A class Python code subclasses (trt-api `python_overridable`); its own methods are pure virtual."""

    _cpp = ""

    @classmethod
    def construct(cls, sim: Sim, owner: str) -> TrampolineState:
        """State for `Base.__init__(self)` of a trampoline class."""
        state = cls(sim)
        state._cpp = owner
        return state

    def _pure(self, name: str) -> RuntimeError:
        return RuntimeError(f'Tried to call pure virtual function "{self._cpp}::{name}"')


class ILoggerState(TrampolineState):
    """ILogger: `log` is what a subclass implements."""

    def log(self, severity: Any, msg: str) -> None:
        """Pure virtual in C++."""
        raise self._pure("log")


class LoggerState(ILoggerState):
    """trt.Logger (C++ DefaultLogger): prints messages at or above `min_severity` to stderr."""

    def __init__(self, sim: Sim, min_severity: Any) -> None:
        super().__init__(sim)
        self._min = sim.expect_enum(min_severity, "ILogger.Severity")

    @classmethod
    def construct(cls, sim: Sim, owner: str, min_severity: Any = None) -> LoggerState:  # type: ignore[override]
        """`Logger(min_severity=Logger.WARNING)`."""
        return cls(sim, min_severity)

    @property
    def min_severity(self) -> Any:
        """The least severe level printed."""
        return self._min

    @min_severity.setter
    def min_severity(self, value: Any) -> None:
        self._min = self._sim.expect_enum(value, "ILogger.Severity")

    def log(self, severity: Any, msg: str) -> None:
        """Print `[date] [TRT] [W] msg` to stderr (simulated format) when severe enough."""
        severity = self._sim.expect_enum(severity, "ILogger.Severity")
        if int(severity) <= int(self._min):
            stamp = time.strftime("%m/%d/%Y-%H:%M:%S")
            print(f"[{stamp}] [TRT] [{_LETTERS.get(severity.name, '?')}] {msg}", file=sys.stderr)


class IProfilerState(TrampolineState):
    """IProfiler: `report_layer_time(layer_name, ms)` is what a subclass implements."""

    def report_layer_time(self, layer_name: str, ms: float) -> None:
        """Pure virtual in C++."""
        raise self._pure("report_layer_time")


class DimsState(State):
    """Dims and its subclasses: a list of ints, indexable, comparable with Dims, tuples and lists."""

    def __init__(self, sim: Sim, dims: list[int]) -> None:
        super().__init__(sim)
        self.dims = dims

    @classmethod
    def construct(cls, sim: Sim, owner: str, **kw: Any) -> DimsState:
        """Dims() | Dims(shape) | Dims2(dim0, dim1) | DimsHW(h, w) | ... (every overload of V)."""
        if "shape" in kw:
            try:
                dims = [int(d) for d in kw["shape"]]
            except (TypeError, ValueError):
                raise ArgTypeError("shape") from None
        else:
            dims = [int(v) for v in kw.values()]
            if owner != "Dims" and not kw:
                dims = [0] * {"Dims2": 2, "DimsHW": 2, "Dims3": 3, "Dims4": 4}.get(owner, 0)
        return cls(sim, dims)

    def _index(self, i: Any) -> int:
        if not isinstance(i, int):
            raise ArgTypeError("int")
        j = i + len(self.dims) if i < 0 else i
        if not 0 <= j < len(self.dims):
            raise IndexError("Out of bounds")
        return j

    def op_len(self) -> int:
        """len(dims)."""
        return len(self.dims)

    def op_getitem(self, arg0: Any) -> Any:
        """dims[i] or dims[a:b] (a tuple)."""
        if isinstance(arg0, slice):
            return tuple(self.dims[arg0])
        return self.dims[self._index(arg0)]

    def op_setitem(self, arg0: Any, arg1: Any) -> None:
        """dims[i] = n."""
        self.dims[self._index(arg0)] = int(arg1)

    def op_eq(self, arg0: Any) -> bool:
        """Equal to a Dims, tuple or list with the same values."""
        try:
            return tuple(self.dims) == as_shape(arg0)
        except ArgTypeError:
            return False

    def op_repr(self) -> str:
        """'(1, 3, 224, 224)'."""
        return str(tuple(self.dims))

    op_str = op_repr

    @property
    def h(self) -> int:
        """DimsHW height."""
        return self.dims[0]

    @h.setter
    def h(self, value: int) -> None:
        self.dims[0] = int(value)

    @property
    def w(self) -> int:
        """DimsHW width."""
        return self.dims[1]

    @w.setter
    def w(self, value: int) -> None:
        self.dims[1] = int(value)


def make_dims(sim: Sim, shape: tuple[int, ...] | list[int]) -> Any:
    """A `tensorrt.Dims` holding `shape`."""
    return sim.new("Dims", DimsState(sim, [int(d) for d in shape]))


class HostMemoryState(State):
    """IHostMemory: `nbytes` and `dtype` (the buffer itself is the surface object's)."""

    def __init__(self, sim: Sim, size: int) -> None:
        super().__init__(sim)
        self._size = size

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return self._size

    @property
    def dtype(self) -> Any:
        """A plan or a timing cache is bytes: DataType.UINT8 (what serialize() and build_serialized_network give)."""
        return self._sim.member("DataType", "UINT8")


def host_memory(sim: Sim, data: bytes) -> Any:
    """A `tensorrt.IHostMemory`: bytes(x), memoryview(x), .nbytes, .dtype (trt-api: buffer_protocol); not a
    `bytes` (pyFoundationalTypes.cpp binds it as a py::class_ with py::buffer_protocol())."""
    cls = sim.classes["IHostMemory"]
    obj: Any = array.array.__new__(cls, "B", data)
    obj._trtsim = HostMemoryState(sim, len(data))
    return obj


# TensorRT's __init__.py functions (python source in trt-api module_functions): numpy types of DataTypes.
_NUMPY: dict[str, Any] = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
    "int32": np.int32,
    "int64": np.int64,
}
_NUMPY.update({"bool": np.bool_, "uint8": np.uint8})
_ITEMSIZE: dict[str, Any] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
    "int32": 4,
    "int64": 8,
    "bool": 1,
    "uint8": 1,
}
_ITEMSIZE.update({"fp8": 1, "int4": 0.5, "fp4": 0.5, "e8m0": 1})


def _lookup(sim: Sim, trt_type: Any, table: dict[str, Any]) -> Any:
    assert sim.module is not None
    for name, value in table.items():
        if name in sim.spec.attributes and getattr(sim.module, name) == trt_type:
            return value
    return None


def nptype(sim: Sim, trt_type: Any) -> Any:
    """tensorrt.nptype: the numpy type of a DataType."""
    found = _lookup(sim, trt_type, _NUMPY)
    if found is None:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return found


def itemsize(sim: Sim, trt_type: Any) -> Any:
    """tensorrt._itemsize (DataType.itemsize)."""
    return _lookup(sim, trt_type, _ITEMSIZE)


def volume(sim: Sim, iterable: Any) -> int:
    """tensorrt.volume: the product of the sizes (0 for an empty iterable)."""
    vol = 1
    for elem in iterable:
        vol *= elem
    return vol if iterable else 0


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "nptype": nptype,
    "_itemsize": itemsize,
    "volume": volume,
    "common_enter": lambda sim, this: this,
    "common_exit": lambda sim, this, exc_type, exc_value, traceback: None,
}
