"""A CUDA graph of TensorRT's enqueue, for `ghost-deploy profile --cuda-graph` (trtexec's --useCudaGraph).

Which CUDA library, and why: the TensorRT runner works through pycuda, and pycuda has no graph API (its
driver wrapper, up to release 2026.1, binds no cuStreamBeginCapture, cuGraphInstantiate or cuGraphLaunch).
cuda-python has one, but it would be a second CUDA binding beside pycuda, whose import path changed
(`cuda.cudart`, then `cuda.bindings.runtime`) and whose version must match the device's CUDA major version.
So this module calls the CUDA *driver* API, the same API pycuda wraps, through ctypes on `libcuda.so.1`,
the library every NVIDIA driver installs (Jetson included), in the context pycuda made current; Polygraphy
drives CUDA through ctypes the same way (docs/reference/tensorrt.md section 8). Nothing extra to install.

Capture follows trtexec: TensorRT enqueues once outside the capture (it finishes deferred setup on the
first enqueue), then the enqueue is captured in thread-local mode, instantiated, and launched per query;
the H2D and D2H copies stay outside the graph. The driver calls need CUDA 11.4 or newer
(`cuGraphInstantiateWithFlags`), which every TensorRT this tool supports (8.5+, JetPack 5+) needs anyway.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from ghost_deploy.errors import StepFailed

_NOT_CAPTURABLE = "this engine cannot be captured in a CUDA graph; profile it without --cuda-graph"
CAPTURE_MODE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, trtexec's capture mode
_SIGNATURES: dict[str, tuple[Any, ...]] = {
    "cuStreamBeginCapture_v2": (ctypes.c_void_p, ctypes.c_int),
    "cuStreamEndCapture": (ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)),
    "cuGraphInstantiateWithFlags": (ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_ulonglong),
    "cuGraphLaunch": (ctypes.c_void_p, ctypes.c_void_p),
    "cuGraphExecDestroy": (ctypes.c_void_p,),
    "cuGraphDestroy": (ctypes.c_void_p,),
    "cuGetErrorName": (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)),
}


def load_driver() -> Any:
    """`libcuda.so.1` with the argument types of the graph calls declared; StepFailed when it cannot load."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise StepFailed(
            f"--cuda-graph needs the CUDA driver library libcuda.so.1, which did not load: {exc}"
        ) from None
    for name, argtypes in _SIGNATURES.items():
        func = getattr(lib, name, None)
        if func is None:
            raise StepFailed(f"--cuda-graph needs a CUDA driver of 11.4 or newer: libcuda.so.1 has no {name}")
        func.argtypes, func.restype = list(argtypes), ctypes.c_int
    return lib


class CudaGraph:
    """An executable CUDA graph of what `work` enqueues on the stream `stream_handle` (a CUstream)."""

    def __init__(self, stream_handle: int, work: Callable[[], None], driver: Any | None = None) -> None:
        self._lib = driver if driver is not None else load_driver()
        self._stream = ctypes.c_void_p(stream_handle)
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()
        self._check(
            "cuStreamBeginCapture_v2", self._lib.cuStreamBeginCapture_v2(self._stream, CAPTURE_MODE_THREAD_LOCAL)
        )
        try:
            work()
        except StepFailed as exc:  # end the capture, or the stream stays unusable
            self._lib.cuStreamEndCapture(self._stream, ctypes.pointer(self._graph))
            self.close()
            raise StepFailed(f"CUDA graph capture: {exc}; {_NOT_CAPTURABLE}") from exc
        ended = self._lib.cuStreamEndCapture(self._stream, ctypes.pointer(self._graph))
        self._check("cuStreamEndCapture", ended, _NOT_CAPTURABLE)
        flags = ctypes.c_ulonglong(0)
        self._check(
            "cuGraphInstantiateWithFlags",
            self._lib.cuGraphInstantiateWithFlags(ctypes.pointer(self._exec), self._graph, flags),
        )

    def launch(self) -> None:
        """Launch the graph on its stream (asynchronous, like the enqueue it replaces)."""
        self._check("cuGraphLaunch", self._lib.cuGraphLaunch(self._exec, self._stream))

    def close(self) -> None:
        """Destroy the executable graph and the graph."""
        if self._exec.value:
            self._lib.cuGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph.value:
            self._lib.cuGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()

    def _check(self, call: str, status: int, hint: str = "") -> None:
        """Raise StepFailed naming the driver call and its error when `status` is not CUDA_SUCCESS."""
        if status == 0:
            return
        self.close()
        name = ctypes.c_char_p()
        known = self._lib.cuGetErrorName(status, ctypes.pointer(name)) == 0 and name.value
        error = name.value.decode() if known and name.value else f"CUresult {status}"
        raise StepFailed(f"CUDA graph: {call} failed with {error}" + (f"; {hint}" if hint else ""))
