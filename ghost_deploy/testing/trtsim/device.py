"""The simulated CUDA device: contexts (a stack per thread), device memory, streams (`streams.StreamTable`).

Device memory lives in host memory at integer addresses of a simulated address space; any access outside a
live allocation fails. Contexts follow the CUDA driver API: `cuCtxCreate` pushes a new context on the calling
thread's stack, the primary context is retained and not pushed, a context is current only on the threads that
pushed it. `runtime_context` models the CUDA runtime API that TensorRT uses: with no current context it makes
the device's primary context current (CUDA runtime lazy initialisation).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import threading

import numpy as np

from ghost_deploy.testing.trtsim.streams import StreamTable
from ghost_deploy.testing.trtsim.versions import SimulatedGPU

_BASE = 0x7F00_0000_0000  # where the simulated device address space starts (UVA-like)
_ALIGN = 512


class Error(Exception):
    """pycuda.driver.Error: base of pycuda's CUDA errors."""


class LogicError(Error):
    """pycuda.driver.LogicError: invalid use (no context, invalid value or handle)."""


class LaunchError(Error):
    """pycuda.driver.LaunchError: a kernel failed (e.g. an illegal memory access)."""


class CudaRuntimeError(Error):
    """pycuda.driver.RuntimeError."""


class CudaMemoryError(Error):
    """pycuda.driver.MemoryError: out of device memory."""


for _cls in (Error, LogicError, LaunchError, CudaRuntimeError, CudaMemoryError):
    _cls.__module__ = "pycuda._driver"
CudaRuntimeError.__name__ = CudaRuntimeError.__qualname__ = "RuntimeError"
CudaMemoryError.__name__ = CudaMemoryError.__qualname__ = "MemoryError"


class DeviceAccessError(Exception):
    """An access outside every live allocation (what CUDA reports as an illegal address / invalid value)."""


@dataclasses.dataclass(eq=False)
class Context:
    """One CUDA context of the (single) simulated device."""

    ident: int
    primary: bool
    alive: bool = True


@dataclasses.dataclass(eq=False)
class Allocation:
    """One device allocation, owned by the context it was made in."""

    base: int
    data: np.ndarray
    context: Context


class Driver:
    """All CUDA state of one simulation; thread-safe."""

    def __init__(self, gpu: SimulatedGPU) -> None:
        self.gpu = gpu
        self.initialized = False
        self._lock = threading.RLock()
        self._stacks: dict[int, list[Context]] = {}
        self._contexts: list[Context] = []
        self._primary: Context | None = None
        self._primary_refs = 0
        self._ids = itertools.count(1)
        self._allocs: dict[int, Allocation] = {}
        self._bases: list[int] = []
        self._next = _BASE
        self.streams = StreamTable()

    # contexts -------------------------------------------------------------------------------------------

    def _stack(self) -> list[Context]:
        return self._stacks.setdefault(threading.get_ident(), [])

    def current(self) -> Context | None:
        """The calling thread's current context."""
        with self._lock:
            stack = self._stack()
            return stack[-1] if stack else None

    def require(self, op: str) -> Context:
        """The current context, or pycuda's LogicError for `op` without one (CUDA_ERROR_INVALID_CONTEXT)."""
        ctx = self.current()
        if ctx is None:
            raise LogicError(f"{op} failed: invalid device context")
        return ctx

    def push(self, ctx: Context) -> None:
        """cuCtxPushCurrent on the calling thread."""
        with self._lock:
            if not ctx.alive:
                raise LogicError("cuCtxPushCurrent failed: invalid device context")
            self._stack().append(ctx)

    def pop(self) -> Context:
        """cuCtxPopCurrent on the calling thread."""
        with self._lock:
            stack = self._stack()
            if not stack:
                raise LogicError("cuCtxPopCurrent failed: invalid device context")
            return stack.pop()

    def create_context(self) -> Context:
        """cuCtxCreate: a new (non-primary) context, pushed on the calling thread."""
        with self._lock:
            ctx = Context(next(self._ids), primary=False)
            self._contexts.append(ctx)
            self._stack().append(ctx)
            return ctx

    def retain_primary(self) -> Context:
        """cuDevicePrimaryCtxRetain: the primary context (created on first retain), not pushed."""
        with self._lock:
            if self._primary is None or not self._primary.alive:
                self._primary = Context(next(self._ids), primary=True)
                self._contexts.append(self._primary)
            self._primary_refs += 1
            return self._primary

    def release(self, ctx: Context) -> None:
        """Detach: release a primary context reference, or destroy a non-primary context."""
        with self._lock:
            if ctx.primary:
                self._primary_refs -= 1
                if self._primary_refs > 0:
                    return
            self._destroy(ctx)

    def _destroy(self, ctx: Context) -> None:
        ctx.alive = False
        self._contexts = [c for c in self._contexts if c is not ctx]
        for stack in self._stacks.values():
            stack[:] = [c for c in stack if c is not ctx]
        for base in [b for b, a in self._allocs.items() if a.context is ctx]:
            self._drop(base)
        self.streams.forget_context(ctx)

    def runtime_context(self) -> Context:
        """The context the CUDA runtime API (TensorRT) works in: the current one, else the primary made current."""
        with self._lock:
            ctx = self.current()
            if ctx is None:
                ctx = self.retain_primary()
                self._stack().append(ctx)
            return ctx

    def live_contexts(self) -> int:
        """How many contexts exist in the process."""
        with self._lock:
            return len(self._contexts)

    # memory ---------------------------------------------------------------------------------------------

    def bytes_in_use(self) -> int:
        """Device memory currently allocated."""
        with self._lock:
            return sum(a.data.nbytes for a in self._allocs.values())

    def alloc(self, nbytes: int, ctx: Context) -> int:
        """Allocate `nbytes` in `ctx`; returns the address (CudaMemoryError when the GPU is full)."""
        with self._lock:
            if nbytes <= 0:
                raise LogicError("cuMemAlloc failed: invalid argument")
            if self.bytes_in_use() + nbytes > self.gpu.memory_mib * 2**20:
                raise CudaMemoryError("cuMemAlloc failed: out of memory")
            base = self._next
            self._next += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN + _ALIGN  # a gap: no two allocations touch
            self._allocs[base] = Allocation(base, np.zeros(nbytes, np.uint8), ctx)
            bisect.insort(self._bases, base)
            return base

    def _drop(self, base: int) -> None:
        del self._allocs[base]
        self._bases.remove(base)

    def free(self, base: int) -> None:
        """Free the allocation at `base` (LogicError if there is none)."""
        with self._lock:
            if base not in self._allocs:
                raise LogicError("cuMemFree failed: invalid argument")
            self._drop(base)

    def find(self, address: int, nbytes: int) -> tuple[Allocation, int]:
        """The allocation holding [address, address + nbytes) and the offset in it (DeviceAccessError if none)."""
        with self._lock:
            i = bisect.bisect_right(self._bases, address) - 1
            if i >= 0:
                found = self._allocs[self._bases[i]]
                offset = address - found.base
                if offset + nbytes <= found.data.nbytes:
                    return found, offset
                raise DeviceAccessError(
                    f"{nbytes} bytes at {address:#x} run past the end of the {found.data.nbytes}-byte allocation "
                    f"at {found.base:#x} by {offset + nbytes - found.data.nbytes} bytes"
                )
            raise DeviceAccessError(f"{address:#x} is not in any live device allocation")

    def read_in(self, ctx: Context, address: int, nbytes: int) -> bytes:
        """Read as a kernel of context `ctx` would: the memory must belong to `ctx`."""
        alloc, offset = self.find(address, nbytes)
        if alloc.context is not ctx:
            raise DeviceAccessError(f"{address:#x} belongs to another CUDA context than the one the work runs in")
        return alloc.data[offset : offset + nbytes].tobytes()

    def write_in(self, ctx: Context, address: int, data: bytes) -> None:
        """Write as a kernel of context `ctx` would: the memory must belong to `ctx`."""
        alloc, offset = self.find(address, len(data))
        if alloc.context is not ctx:
            raise DeviceAccessError(f"{address:#x} belongs to another CUDA context than the one the work runs in")
        alloc.data[offset : offset + len(data)] = np.frombuffer(data, np.uint8)

    def read(self, address: int, nbytes: int) -> bytes:
        """Copy `nbytes` from the device."""
        alloc, offset = self.find(address, nbytes)
        return alloc.data[offset : offset + nbytes].tobytes()

    def write(self, address: int, data: bytes | memoryview) -> None:
        """Copy `data` to the device."""
        raw = np.frombuffer(data, np.uint8)
        alloc, offset = self.find(address, raw.nbytes)
        alloc.data[offset : offset + raw.nbytes] = raw

    # streams --------------------------------------------------------------------------------------------

    def create_stream(self, ctx: Context, blocking: bool = True) -> int:
        """A stream of `ctx`; returns its handle."""
        return self.streams.create(ctx, blocking)

    def stream_context(self, handle: int) -> Context | None:
        """The context a stream handle belongs to (None for an unknown handle)."""
        found = self.streams.context_of(handle)
        return found if isinstance(found, Context) else None

    def destroy_stream(self, handle: int) -> None:
        """Forget a stream."""
        self.streams.destroy(handle)

    def shutdown(self) -> None:
        """Free everything: every context, allocation and stream, on every thread."""
        with self._lock:
            for ctx in list(self._contexts):
                self._destroy(ctx)
            self._allocs.clear()
            self._bases.clear()
            self._stacks.clear()
            self.streams.clear()
            self._primary, self._primary_refs = None, 0
