"""A CUDA graph of TensorRT's enqueue, for `ghost-deploy profile --cuda-graph` (trtexec's --useCudaGraph).

Which binding, and why: NVIDIA's cuda-python (`cuda.bindings.driver`). pycuda, which the runner uses for
memory, streams and events, has no stream capture in any release: its driver wrapper, through 2026.1, binds no
cuStreamBeginCapture, cuGraphInstantiate or cuGraphLaunch (graph support exists only in pull requests #343
and #424, never merged). cuda-python is NVIDIA's own binding, released with every CUDA version, with aarch64
wheels for Jetson; its driver API works on the stream pycuda made, in the context pycuda made current (both
wrap the same libcuda driver API). The TensorRT simulator provides the same module, so the graph path runs in
CI. Its major version must match the CUDA major of the machine (11 for CUDA 11.4 on JetPack 5, 12 on JetPack 6
and CUDA 12 desktops, 13 for CUDA 13): the extra `cuda-graph` installs it and, when it is missing, the error
says which to pin (exit 3). The module is `cuda.bindings.driver` from cuda-bindings 11.8.7 / 12.6.1 on, and
`cuda.cuda` before; the API is the same but for instantiation: cuda-python 11.x names the flags call
`cuGraphInstantiateWithFlags`, 12.x+ `cuGraphInstantiate(graph, flags)` (the older name is used where present).

Capture follows trtexec: TensorRT enqueues once outside the capture (it finishes deferred setup on the first
enqueue), then the enqueue is captured in thread-local mode, instantiated, and launched per query; the H2D and
D2H copies stay outside the graph. An error ends the capture (or the stream stays unusable) and says that the
engine cannot be captured.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ghost_deploy.errors import MissingDependencyError, StepFailed

_NOT_CAPTURABLE = "this engine cannot be captured in a CUDA graph; profile it without --cuda-graph"
_INSTALL = (
    "--cuda-graph needs NVIDIA's cuda-python (stream capture: pycuda has none), which is not installed; install the "
    "release of your CUDA's major version: pip install 'cuda-python==12.*' (JetPack 6, CUDA 12), '13.*' for "
    "CUDA 13, '11.8.*' for CUDA 11.4 (JetPack 5); the extra ghost-deploy[cuda-graph] installs the newest"
)


def load_driver() -> Any:
    """cuda-python's driver module (`cuda.bindings.driver`, else the older `cuda.cuda`); exit 3 without it."""
    for name in ("cuda.bindings.driver", "cuda.cuda"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                raise  # cuda-python is there but one of its own imports is broken: show the real cause
    raise MissingDependencyError("cuda-python", "cuda-graph", "--cuda-graph", _INSTALL)


class CudaGraph:
    """An executable CUDA graph of what `work` enqueues on the stream `stream_handle` (a CUstream address)."""

    def __init__(self, stream_handle: int, work: Callable[[], None], driver: Any | None = None) -> None:
        self._cu = driver if driver is not None else load_driver()
        self._stream = stream_handle
        self._graph: Any = None
        self._exec: Any = None
        mode = self._cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL  # trtexec's capture mode
        self._check("cuStreamBeginCapture", self._cu.cuStreamBeginCapture(stream_handle, mode))
        try:
            work()
        except StepFailed as exc:
            self._end_capture()
            raise StepFailed(f"CUDA graph capture: {exc}; {_NOT_CAPTURABLE}") from exc
        except BaseException:
            self._end_capture()
            raise
        err, graph = self._cu.cuStreamEndCapture(stream_handle)
        self._check("cuStreamEndCapture", (err,), _NOT_CAPTURABLE)
        self._graph = graph
        with_flags = getattr(self._cu, "cuGraphInstantiateWithFlags", None)  # cuda-python 11.x's name
        result = with_flags(graph, 0) if with_flags is not None else self._cu.cuGraphInstantiate(graph, 0)
        self._check("cuGraphInstantiate", result)
        self._exec = result[1]

    def launch(self) -> None:
        """Launch the graph on its stream (asynchronous, like the enqueue it replaces)."""
        self._check("cuGraphLaunch", self._cu.cuGraphLaunch(self._exec, self._stream))

    def close(self) -> None:
        """Destroy the executable graph and the graph (a launch still queued keeps running)."""
        exe, graph, self._exec, self._graph = self._exec, self._graph, None, None
        if exe is not None:
            self._cu.cuGraphExecDestroy(exe)
        if graph is not None:
            self._cu.cuGraphDestroy(graph)

    def _end_capture(self) -> None:
        """End a failed capture so that the stream is usable again; its graph, if any, is dropped."""
        _err, graph = self._cu.cuStreamEndCapture(self._stream)
        if graph is not None and int(graph):
            self._cu.cuGraphDestroy(graph)

    def _check(self, call: str, result: tuple[Any, ...], hint: str = "") -> None:
        """Raise StepFailed naming the driver call and its CUresult when it is not CUDA_SUCCESS."""
        err = result[0]
        if int(err) == 0:
            return
        self.close()
        name = getattr(err, "name", None) or f"CUresult {int(err)}"
        raise StepFailed(f"CUDA graph: {call} failed with {name}" + (f"; {hint}" if hint else ""))
