"""CUDA's asynchrony, simulated: work queued on streams runs only when the host waits for it; stream capture.

docs/reference/tensorrt.md s11 cites each rule. In short:

- Asynchronous copies, TensorRT's enqueue, event records and graph launches *enqueue* work on a stream. Work
  runs in enqueue order, and only when something waits for it: the stream's synchronize, the synchronize (or
  query) of an event recorded after it, a context synchronize, or a synchronous copy (which runs on the legacy
  default stream, handle 0, ordered after the work of every blocking stream of its context). Until then its
  effects are invisible: a host buffer holds what it held before, device memory too. A real GPU may finish
  earlier; code that relies on that is wrong, and this simulator makes it visibly wrong.
- Work waits for the work it is ordered after, possibly queued by another thread; the thread that waits runs
  it (the simulated GPU is lazy, never early). Different streams' work runs concurrently in the threads that
  wait for it.
- Stream capture records the work enqueued on a capturing stream as graph nodes instead of running it. While
  a stream captures, synchronizing it or its context, using the legacy stream, an "unsafe" call (cuMemAlloc)
  from the capturing thread, or a copy to or from pageable (not page-locked) host memory fails and
  invalidates the capture; ending an invalidated capture fails and gives no graph. A launch of the
  instantiated graph enqueues its nodes, replayed in order, as one piece of work.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Context(Protocol):
    """What the stream table needs of a CUDA context (`device.Context` is one): its identity."""

    ident: int


# CUresult name -> (value, cuGetErrorString's text), the subset the simulation reports (cuda.h of CUDA 12.x).
CUDA_ERRORS: dict[str, tuple[int, str]] = {
    "CUDA_SUCCESS": (0, "no error"),
    "CUDA_ERROR_INVALID_VALUE": (1, "invalid argument"),
    "CUDA_ERROR_OUT_OF_MEMORY": (2, "out of memory"),
    "CUDA_ERROR_NOT_INITIALIZED": (3, "initialization error"),
    "CUDA_ERROR_INVALID_CONTEXT": (201, "invalid device context"),
    "CUDA_ERROR_INVALID_HANDLE": (400, "invalid resource handle"),
    "CUDA_ERROR_NOT_READY": (600, "device not ready"),
    "CUDA_ERROR_ILLEGAL_ADDRESS": (700, "an illegal memory access was encountered"),
    "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED": (900, "operation not permitted when stream is capturing"),
    "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED": (901, "operation failed due to a previous error during capture"),
    "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED": (903, "capture was not initiated in this stream"),
    "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT": (
        906,
        "operation would make the legacy stream depend on a capturing blocking stream",
    ),
    "CUDA_ERROR_CAPTURED_EVENT": (907, "operation not permitted on an event last recorded in a capturing stream"),
    "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD": (
        908,
        "attempt to terminate a thread-local capture sequence from another thread",
    ),
}
CAPTURE_GLOBAL, CAPTURE_THREAD_LOCAL, CAPTURE_RELAXED = 0, 1, 2  # CUstreamCaptureMode


class CudaFailure(Exception):
    """A failed CUDA call: its CUresult name; each simulated binding turns it into its own error or result."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.number, self.text = CUDA_ERRORS[code]
        super().__init__(self.text + (f" ({detail})" if detail else ""))


@dataclasses.dataclass(eq=False)
class Work:
    """One piece of enqueued work; `after` is what it is ordered after (its stream's previous work and, for
    the legacy stream's implicit synchronization, other streams' last work)."""

    seq: int
    label: str
    run: Callable[[], None]
    after: list[Work]
    stream: Stream
    claimed: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: CudaFailure | None = None


@dataclasses.dataclass(eq=False)
class Capture:
    """An active stream capture: the nodes recorded so far and, once invalidated, why."""

    mode: int
    thread: int
    nodes: list[tuple[str, Callable[[], None]]] = dataclasses.field(default_factory=list)
    invalidated: str | None = None


@dataclasses.dataclass(eq=False)
class Stream:
    """A stream of one context; `blocking` streams synchronize implicitly with the legacy stream."""

    handle: int
    context: Context
    blocking: bool
    queue: collections.deque[Work] = dataclasses.field(default_factory=collections.deque)
    last: Work | None = None
    capture: Capture | None = None


class StreamTable:
    """Every stream, capture, graph and page-locked host range of one simulated process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._streams: dict[int, Stream] = {}
        self._legacy: dict[int, Stream] = {}  # context ident -> that context's legacy default stream
        self._seq = itertools.count(1)
        self._handles = itertools.count(1)
        self._pinned: dict[int, int] = {}  # start address -> bytes of page-locked host memory
        self.graphs: dict[int, tuple[tuple[str, Callable[[], None]], ...]] = {}
        self.execs: dict[int, tuple[tuple[str, Callable[[], None]], ...]] = {}

    # streams ----------------------------------------------------------------------------------------------

    def create(self, ctx: Context, blocking: bool = True) -> int:
        """A new stream of `ctx`; its handle."""
        with self._lock:
            handle = 0x5500_0000 + next(self._handles) * 0x100
            self._streams[handle] = Stream(handle, ctx, blocking)
            return handle

    def context_of(self, handle: int) -> Context | None:
        """The context a stream handle belongs to (None when unknown)."""
        with self._lock:
            stream = self._streams.get(handle)
            return None if stream is None else stream.context

    def destroy(self, handle: int) -> None:
        """Forget a stream (its queued work still runs when waited for, as cuStreamDestroy allows)."""
        with self._lock:
            self._streams.pop(handle, None)

    def forget_context(self, ctx: Context) -> None:
        """Drop the streams of a destroyed context."""
        with self._lock:
            self._streams = {h: s for h, s in self._streams.items() if s.context is not ctx}
            self._legacy.pop(ctx.ident, None)

    def clear(self) -> None:
        """Drop everything (the simulation is uninstalled)."""
        with self._lock:
            self._streams.clear()
            self._legacy.clear()
            self._pinned.clear()
            self.graphs.clear()
            self.execs.clear()

    def _resolve(self, handle: int, ctx: Context) -> Stream:
        if handle == 0:
            return self._legacy.setdefault(ctx.ident, Stream(0, ctx, True))
        stream = self._streams.get(handle)
        if stream is None or stream.context is not ctx:
            raise CudaFailure("CUDA_ERROR_INVALID_HANDLE")
        return stream

    def _of_context(self, ctx: Context) -> list[Stream]:
        found = [s for s in self._streams.values() if s.context is ctx]
        legacy = self._legacy.get(ctx.ident)
        return [*found, legacy] if legacy is not None else found

    # capture rules ---------------------------------------------------------------------------------------

    def _fail_capture(self, stream: Stream, code: str, why: str) -> CudaFailure:
        """Invalidate `stream`'s capture (CUDA: the whole capture sequence) and return the error to raise."""
        assert stream.capture is not None
        stream.capture.invalidated = stream.capture.invalidated or why
        return CudaFailure(code, why)

    def capture_of(self, handle: int, ctx: Context) -> Capture | None:
        """The stream's capture, or None."""
        with self._lock:
            return self._resolve(handle, ctx).capture

    def capturing(self, handle: int, ctx: Context) -> bool:
        """Whether the stream is capturing."""
        return self.capture_of(handle, ctx) is not None

    def invalidate(self, handle: int, ctx: Context, why: str) -> None:
        """Invalidate the stream's capture (an operation inside it was not capturable)."""
        with self._lock:
            stream = self._resolve(handle, ctx)
            if stream.capture is not None:
                self._fail_capture(stream, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", why)

    def check_unsafe_call(self, ctx: Context, call: str) -> None:
        """cuMemAlloc and the like fail under a GLOBAL capture anywhere, or a THREAD_LOCAL one of this thread."""
        with self._lock:
            me = threading.get_ident()
            for stream in self._of_context(ctx):
                cap = stream.capture
                mine = cap is not None and cap.mode == CAPTURE_THREAD_LOCAL and cap.thread == me
                if cap is not None and (cap.mode == CAPTURE_GLOBAL or mine):
                    raise self._fail_capture(stream, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", f"{call} during capture")

    def _check_legacy(self, ctx: Context) -> None:
        for stream in self._of_context(ctx):
            if stream.capture is not None and stream.blocking and stream.handle != 0:
                raise self._fail_capture(stream, "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", "the legacy stream was used")

    def pin(self, array: np.ndarray) -> None:
        """Register `array`'s memory as page-locked (pycuda.driver.pagelocked_empty) while it lives."""
        if array.nbytes == 0:
            return
        start = int(array.__array_interface__["data"][0])
        with self._lock:
            self._pinned[start] = array.nbytes
        weakref.finalize(array, self._unpin, start)

    def _unpin(self, start: int) -> None:
        with self._lock:
            self._pinned.pop(start, None)

    def pinned(self, host: memoryview) -> bool:
        """Whether the host buffer lies inside page-locked memory."""
        if host.nbytes == 0:
            return True
        start = int(np.frombuffer(host, np.uint8).__array_interface__["data"][0])
        with self._lock:
            return any(s <= start and start + host.nbytes <= s + n for s, n in self._pinned.items())

    # enqueue and wait ------------------------------------------------------------------------------------

    def enqueue(
        self, handle: int, ctx: Context, label: str, run: Callable[[], None], host: memoryview | None = None
    ) -> Work | None:
        """Queue `run` on the stream (None: recorded into the stream's capture instead). `host`: the host buffer of
        a copy, which a capture accepts only in page-locked memory."""
        with self._lock:
            stream = self._resolve(handle, ctx)
            cap = stream.capture
            if cap is not None:
                if cap.invalidated:
                    raise CudaFailure("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", cap.invalidated)
                if host is not None and not self.pinned(host):
                    raise self._fail_capture(
                        stream, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", f"{label} with pageable host memory"
                    )
                cap.nodes.append((label, run))
                return None
            if handle == 0:
                self._check_legacy(ctx)
            after = [stream.last] if stream.last is not None else []
            after += self._implicit(stream)
            work = Work(next(self._seq), label, run, [w for w in after if not w.done.is_set()], stream)
            stream.queue.append(work)
            stream.last = work
            return work

    def _implicit(self, stream: Stream) -> list[Work]:
        """The legacy stream waits for every blocking stream of its context, and they wait for it."""
        if not stream.blocking:
            return []
        if stream.handle == 0:
            others = [s for s in self._streams.values() if s.context is stream.context and s.blocking]
            return [s.last for s in others if s.last is not None]
        legacy = self._legacy.get(stream.context.ident)
        return [legacy.last] if legacy is not None and legacy.last is not None else []

    def wait(self, work: Work | None) -> None:
        """Block until `work` is done, running what it needs (CudaFailure when it or what it follows failed)."""
        if work is None:
            return
        for item in self._claim(work):
            _execute(item)
        work.done.wait()
        if work.error is not None:
            raise work.error

    def _claim(self, work: Work) -> list[Work]:
        """Take `work` and everything it is ordered after off their queues, in enqueue order."""
        taken: list[Work] = []
        with self._lock:
            pending = [work]
            while pending:
                target = pending.pop()
                if target.claimed:
                    continue
                queue = target.stream.queue
                while queue:
                    item = queue.popleft()
                    item.claimed = True
                    taken.append(item)
                    pending.extend(w for w in item.after if not w.claimed)
                    if item is target:
                        break
        return sorted(taken, key=lambda w: w.seq)

    def synchronize(self, handle: int, ctx: Context) -> None:
        """cuStreamSynchronize: invalid on a capturing stream; else wait for its last work."""
        with self._lock:
            stream = self._resolve(handle, ctx)
            if stream.capture is not None:
                raise self._fail_capture(stream, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "stream synchronize")
            last = stream.last
        self.wait(last)

    def synchronize_context(self, ctx: Context) -> None:
        """cuCtxSynchronize: invalid while any of its streams captures; else wait for all of its work."""
        with self._lock:
            streams = self._of_context(ctx)
            for stream in streams:
                if stream.capture is not None:
                    raise self._fail_capture(stream, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "context synchronize")
            lasts = [s.last for s in streams]
        for last in lasts:
            self.wait(last)

    def run_now(self, ctx: Context, label: str, run: Callable[[], None]) -> None:
        """A synchronous call (cuMemcpyHtoD...): on the legacy stream, after all earlier work, waited for."""
        self.wait(self.enqueue(0, ctx, label, run))

    # capture and graphs ----------------------------------------------------------------------------------

    def begin_capture(self, handle: int, ctx: Context, mode: int) -> None:
        """cuStreamBeginCapture: not on the legacy stream, not twice."""
        with self._lock:
            if handle == 0:
                raise CudaFailure("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "the legacy stream cannot capture")
            stream = self._resolve(handle, ctx)
            if stream.capture is not None:
                raise CudaFailure("CUDA_ERROR_INVALID_VALUE", "the stream is already capturing")
            stream.capture = Capture(mode, threading.get_ident())

    def end_capture(self, handle: int, ctx: Context) -> int:
        """cuStreamEndCapture: the graph's handle; an invalidated capture ends with an error and no graph."""
        with self._lock:
            stream = self._resolve(handle, ctx)
            cap = stream.capture
            if cap is None:
                raise CudaFailure("CUDA_ERROR_STREAM_CAPTURE_UNMATCHED")
            if cap.mode != CAPTURE_RELAXED and cap.thread != threading.get_ident():
                raise CudaFailure("CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD")
            stream.capture = None
            if cap.invalidated:
                raise CudaFailure("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", cap.invalidated)
            handle = 0x6600_0000 + next(self._handles) * 0x100
            self.graphs[handle] = tuple(cap.nodes)
            return handle

    def instantiate(self, graph: int) -> int:
        """cuGraphInstantiate: an executable copy of the graph's nodes."""
        with self._lock:
            if graph not in self.graphs:
                raise CudaFailure("CUDA_ERROR_INVALID_VALUE", "not a graph")
            handle = 0x7700_0000 + next(self._handles) * 0x100
            self.execs[handle] = self.graphs[graph]
            return handle

    def launch(self, exe: int, handle: int, ctx: Context) -> None:
        """cuGraphLaunch: the nodes, replayed in order, as one piece of work on the stream."""
        with self._lock:
            nodes = self.execs.get(exe)
            if nodes is None:
                raise CudaFailure("CUDA_ERROR_INVALID_VALUE", "not an executable graph")

        def replay() -> None:
            for _label, run in nodes:
                run()

        self.enqueue(handle, ctx, "graph launch", replay)

    def destroy_handle(self, table: dict[int, Any], handle: int) -> None:
        """cuGraphDestroy / cuGraphExecDestroy (queued launches keep their nodes)."""
        with self._lock:
            if table.pop(handle, None) is None:
                raise CudaFailure("CUDA_ERROR_INVALID_VALUE", "already destroyed or never made")


def _execute(item: Work) -> None:
    """Run one claimed piece of work once what it follows is done; a failure before it is inherited."""
    try:
        for dep in item.after:
            dep.done.wait()
            if dep.error is not None and item.error is None:
                item.error = dep.error
        if item.error is None:
            item.run()
    except CudaFailure as exc:
        item.error = exc
    finally:
        item.after = []  # done: drop the chain to earlier work (and `run`'s buffers), or a stream keeps it all
        item.run = _done
        item.done.set()


def _done() -> None:
    """What a finished piece of work holds instead of its closure."""
