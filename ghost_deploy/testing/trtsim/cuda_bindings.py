"""The simulated `cuda.bindings.driver` of NVIDIA's cuda-python: the stream-capture and graph calls.

Only the names that `--cuda-graph` and its tests use are simulated; each exists in the real binding, whose
Cython source the wheel ships (`cuda/bindings/driver.pyx`; tensorrt.md s11 gives the line of each). The
surface follows the binding's major version: 12.x (cuda-bindings 12.9.10, CUDA 12 drivers: JetPack 6, and
the desktop) for TensorRT 8.6 and later, 11.x (cuda-bindings 11.8.7, CUDA 11.4 on JetPack 5) for 8.5. The
differences kept: 12.x has `cuGraphInstantiate(hGraph, flags)` and no `cuGraphInstantiateWithFlags`; 11.x has
`cuGraphInstantiateWithFlags(hGraph, flags)` and a `cuGraphInstantiate(hGraph, logBuffer, bufferSize)` of
three results; a failed 12.x call returns None in place of its handle. Every call returns a tuple whose first
item is a `CUresult`, as the binding does; it raises only for arguments of the wrong type. The work runs on the
simulated device of the installation (`streams`), so a capture sees exactly what the product enqueues.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable
from typing import Any

from ghost_deploy.testing.trtsim.device import Driver
from ghost_deploy.testing.trtsim.streams import CUDA_ERRORS, CudaFailure

BINDING_VERSIONS = {11: "11.8.7", 12: "12.9.10"}  # the wheels whose driver.pyx the surface was read from
# Each simulated name -> its line in that wheel's cuda/bindings/driver.pyx (the `def` or `class`).
REAL_NAMES: dict[int, dict[str, int]] = {
    12: {
        "CUstreamCaptureStatus": 3914,
        "CUstreamCaptureMode": 3939,
        "CUresult": 4050,
        "CUstream": 8022,
        "CUgraph": 8160,
        "CUgraphNode": 8194,
        "CUgraphExec": 8228,
        "cuGetErrorString": 23047,
        "cuGetErrorName": 23080,
        "cuInit": 23113,
        "cuCtxSynchronize": 25435,
        "cuStreamBeginCapture": 36319,
        "cuStreamEndCapture": 36546,
        "cuStreamIsCapturing": 36591,
        "cuStreamSynchronize": 37140,
        "cuGraphInstantiate": 43809,
        "cuGraphLaunch": 44844,
        "cuGraphExecDestroy": 44895,
        "cuGraphDestroy": 44929,
    },
    11: {
        "CUstreamCaptureStatus": 2030,
        "CUstreamCaptureMode": 2046,
        "CUresult": 2080,
        "CUstream": 4045,
        "CUgraph": 4157,
        "CUgraphNode": 4185,
        "CUgraphExec": 4213,
        "cuGetErrorString": 11931,
        "cuGetErrorName": 11961,
        "cuInit": 11991,
        "cuCtxSynchronize": 13849,
        "cuStreamBeginCapture": 21671,
        "cuStreamEndCapture": 21792,
        "cuStreamIsCapturing": 21835,
        "cuStreamSynchronize": 22251,
        "cuGraphInstantiate": 28314,
        "cuGraphInstantiateWithFlags": 28366,
        "cuGraphLaunch": 29162,
        "cuGraphExecDestroy": 29214,
        "cuGraphDestroy": 29248,
    },
}


def _enum(name: str, members: dict[str, int]) -> Any:
    """An int enum of the binding (the binding's own are int subclasses with `.name`)."""
    return enum.IntEnum(name, members)


CUresult = _enum("CUresult", {name: number for name, (number, _text) in CUDA_ERRORS.items()})
_STATUS = ("NONE", "ACTIVE", "INVALIDATED")
CUstreamCaptureStatus = _enum(
    "CUstreamCaptureStatus", {f"CU_STREAM_CAPTURE_STATUS_{n}": i for i, n in enumerate(_STATUS)}
)
_MODES = ("GLOBAL", "THREAD_LOCAL", "RELAXED")
CUstreamCaptureMode = _enum("CUstreamCaptureMode", {f"CU_STREAM_CAPTURE_MODE_{n}": i for i, n in enumerate(_MODES)})


class _Handle:
    """A CUDA handle class of the binding (CUstream, CUgraph, CUgraphExec): `int()` is the address."""

    def __init__(self, init_value: int = 0) -> None:
        self._value = int(init_value)

    def __int__(self) -> int:
        return self._value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and int(other) == self._value  # type: ignore[call-overload]

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._value:#x}>"

    def getPtr(self) -> int:
        """The address of the handle (the simulation has none of its own: the value)."""
        return self._value


class CUstream(_Handle):
    """cuda.bindings.driver.CUstream."""


class CUgraph(_Handle):
    """cuda.bindings.driver.CUgraph."""


class CUgraphExec(_Handle):
    """cuda.bindings.driver.CUgraphExec."""


class CUgraphNode(_Handle):
    """cuda.bindings.driver.CUgraphNode (11.x's cuGraphInstantiate returns one)."""


def _as_int(value: Any, cls: type[_Handle]) -> int:
    """What the binding accepts for a handle: None (0), an instance of its class, or an int."""
    if value is None:
        return 0
    if isinstance(value, cls):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"Argument must be of type {cls.__name__} or an int address, got {type(value).__name__}")


class _Api:
    """The calls of one installation, bound to its driver; each returns what the binding returns."""

    def __init__(self, driver: Driver, major: int) -> None:
        self._driver = driver
        self._major = major

    def _result(self, call: Callable[[], Any], empty: int) -> tuple[Any, ...]:
        """(CUresult, *values): SUCCESS and the values, or the failure and None x `empty`."""
        if not self._driver.initialized:
            return (CUresult.CUDA_ERROR_NOT_INITIALIZED, *([None] * empty))
        try:
            values = call()
        except CudaFailure as exc:
            return (CUresult[exc.code], *([None] * empty))
        return (
            CUresult.CUDA_SUCCESS,
            *(values if isinstance(values, tuple) else (() if values is None else (values,))),
        )

    def _stream(self, value: Any) -> tuple[int, Any]:
        """The stream handle and its context (0: the current context's legacy stream)."""
        handle = _as_int(value, CUstream)
        ctx = self._driver.current() if handle == 0 else self._driver.stream_context(handle)
        if ctx is None:
            raise CudaFailure("CUDA_ERROR_INVALID_CONTEXT" if handle == 0 else "CUDA_ERROR_INVALID_HANDLE")
        return handle, ctx

    def cuInit(self, Flags: int) -> tuple[Any, ...]:
        """Initialize the driver API."""
        self._driver.initialized = True
        return (CUresult.CUDA_SUCCESS,)

    def cuGetErrorName(self, error: Any) -> tuple[Any, ...]:
        """(CUresult, the error's name as bytes)."""
        return (CUresult.CUDA_SUCCESS, CUresult(error).name.encode())

    def cuGetErrorString(self, error: Any) -> tuple[Any, ...]:
        """(CUresult, the error's description as bytes)."""
        return (CUresult.CUDA_SUCCESS, CUDA_ERRORS[CUresult(error).name][1].encode())

    def cuStreamBeginCapture(self, hStream: Any, mode: Any) -> tuple[Any, ...]:
        """Begin capturing the stream's work into a graph."""
        if not isinstance(mode, CUstreamCaptureMode):
            raise TypeError("Argument 'mode' has incorrect type (expected CUstreamCaptureMode)")

        def begin() -> None:
            handle, ctx = self._stream(hStream)
            self._driver.streams.begin_capture(handle, ctx, int(mode))

        return self._result(begin, 0)

    def cuStreamEndCapture(self, hStream: Any) -> tuple[Any, ...]:
        """(CUresult, CUgraph): end the capture."""

        def end() -> CUgraph:
            handle, ctx = self._stream(hStream)
            return CUgraph(self._driver.streams.end_capture(handle, ctx))

        result = self._result(end, 1)
        return (result[0], CUgraph()) if self._major == 11 and result[1] is None else result

    def cuStreamIsCapturing(self, hStream: Any) -> tuple[Any, ...]:
        """(CUresult, CUstreamCaptureStatus)."""

        def status() -> Any:
            handle, ctx = self._stream(hStream)
            capture = self._driver.streams.capture_of(handle, ctx)
            if capture is None:
                return CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE
            if capture.invalidated:
                return CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_INVALIDATED
            return CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_ACTIVE

        return self._result(status, 1)

    def cuStreamSynchronize(self, hStream: Any) -> tuple[Any, ...]:
        """Wait for the stream's work."""
        return self._result(lambda: self._driver.streams.synchronize(*self._stream(hStream)), 0)

    def cuCtxSynchronize(self) -> tuple[Any, ...]:
        """Wait for all work of the current context."""

        def sync() -> None:
            ctx = self._driver.current()
            if ctx is None:
                raise CudaFailure("CUDA_ERROR_INVALID_CONTEXT")
            self._driver.streams.synchronize_context(ctx)

        return self._result(sync, 0)

    def instantiate(self, hGraph: Any, flags: int) -> tuple[Any, ...]:
        """(CUresult, CUgraphExec): 12.x's cuGraphInstantiate, 11.x's cuGraphInstantiateWithFlags."""
        graph = _as_int(hGraph, CUgraph)
        result = self._result(lambda: CUgraphExec(self._driver.streams.instantiate(graph)), 1)
        return (result[0], CUgraphExec()) if self._major == 11 and result[1] is None else result

    def instantiate_11(self, hGraph: Any, logBuffer: Any, bufferSize: int) -> tuple[Any, ...]:
        """11.x's cuGraphInstantiate: (CUresult, CUgraphExec, CUgraphNode)."""
        err, exe = self.instantiate(hGraph, 0)
        return (err, exe, CUgraphNode())

    def cuGraphLaunch(self, hGraphExec: Any, hStream: Any) -> tuple[Any, ...]:
        """Enqueue the executable graph on the stream."""
        exe = _as_int(hGraphExec, CUgraphExec)
        return self._result(lambda: self._driver.streams.launch(exe, *self._stream(hStream)), 0)

    def cuGraphExecDestroy(self, hGraphExec: Any) -> tuple[Any, ...]:
        """Destroy an executable graph."""
        exe = _as_int(hGraphExec, CUgraphExec)
        return self._result(lambda: self._driver.streams.destroy_handle(self._driver.streams.execs, exe), 0)

    def cuGraphDestroy(self, hGraph: Any) -> tuple[Any, ...]:
        """Destroy a graph."""
        graph = _as_int(hGraph, CUgraph)
        return self._result(lambda: self._driver.streams.destroy_handle(self._driver.streams.graphs, graph), 0)


_CALLS = (
    "cuInit",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuStreamBeginCapture",
    "cuStreamEndCapture",
    "cuStreamIsCapturing",
    "cuStreamSynchronize",
    "cuCtxSynchronize",
    "cuGraphLaunch",
    "cuGraphExecDestroy",
    "cuGraphDestroy",
)


def build_cuda_bindings(driver: Driver, major: int) -> dict[str, types.ModuleType]:
    """`cuda`, `cuda.bindings` and `cuda.bindings.driver` of cuda-python `major` (11 or 12), bound to `driver`."""
    api = _Api(driver, major)
    mod = types.ModuleType("cuda.bindings.driver", "Simulated cuda.bindings.driver (ghost_deploy.testing.trtsim)")
    names: dict[str, Any] = {name: getattr(api, name) for name in _CALLS}
    if major == 11:
        names.update(cuGraphInstantiate=api.instantiate_11, cuGraphInstantiateWithFlags=api.instantiate)
    else:
        names["cuGraphInstantiate"] = api.instantiate
    classes = (CUresult, CUstreamCaptureStatus, CUstreamCaptureMode, CUstream, CUgraph, CUgraphExec, CUgraphNode)
    names.update({cls.__name__: cls for cls in classes})

    def missing(name: str) -> Any:
        raise AttributeError(f"module 'cuda.bindings.driver' has no attribute '{name}' (not simulated by trtsim)")

    names["__getattr__"] = missing
    for key, value in names.items():
        setattr(mod, key, value)
    bindings = types.ModuleType("cuda.bindings", "Simulated cuda.bindings (ghost_deploy.testing.trtsim)")
    bindings.__path__ = []
    bindings.__version__ = BINDING_VERSIONS[major]  # type: ignore[attr-defined]
    bindings.driver = mod  # type: ignore[attr-defined]
    package = types.ModuleType("cuda", "Simulated cuda namespace package (ghost_deploy.testing.trtsim)")
    package.__path__ = []
    package.bindings = bindings  # type: ignore[attr-defined]
    return {"cuda": package, "cuda.bindings": bindings, "cuda.bindings.driver": mod}


def binding_major(trt_version: tuple[int, ...]) -> int:
    """The cuda-python major simulated beside a TensorRT version: 11 with 8.5 (JetPack 5's CUDA 11.4), else 12
    (8.6 on JetPack 6's CUDA 12.2, 10.x and 11.x)."""
    return 11 if trt_version[:2] < (8, 6) else 12
