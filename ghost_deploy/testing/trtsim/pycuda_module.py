"""The simulated `pycuda`, `pycuda.driver`, and the import effects of `pycuda.autoinit` / `pycuda.autoprimaryctx`.

tensorrt.md s8: the <= 8.5 samples use `import pycuda.autoprimaryctx` (falling back to `pycuda.autoinit`),
`cuda.mem_alloc`, `pagelocked_empty`, `memcpy_htod_async(dev, host, stream)`, `cuda.Stream()` and `int(devptr)`.
The `*_async` copies and event records enqueue work that runs only when the host waits for it (`streams`,
tensorrt.md s11); the synchronous copies wait for all earlier work of their context first. An event records
the host time at which the simulated GPU reached it. Each installation gets its own subclasses of the classes
below, bound to its `Driver`. A failed CUDA call raises what pycuda's `translate_cuda_error` raises for its
CUresult (src/wrapper/wrap_cudadrv.cpp): LogicError for most, RuntimeError for CUDA_ERROR_NOT_READY.
"""

from __future__ import annotations

import contextlib
import functools
import time
import types
from typing import Any, ClassVar

import numpy as np

from ghost_deploy.testing.trtsim import device as dev
from ghost_deploy.testing.trtsim.device import DeviceAccessError, Driver, LogicError
from ghost_deploy.testing.trtsim.streams import CudaFailure, Work


class _Bound:
    """What the pycuda classes of one installation share: the driver and one wrapper per context."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.classes: dict[str, Any] = {}
        self._wrappers: dict[int, Any] = {}

    def wrap(self, ctx: dev.Context) -> Any:
        """The pycuda Context object of a driver context (always the same object)."""
        if ctx.ident not in self._wrappers:
            self._wrappers[ctx.ident] = self.classes["Context"](ctx)
        return self._wrappers[ctx.ident]


class Context:
    """pycuda.driver.Context."""

    _bound: ClassVar[_Bound]

    def __init__(self, ctx: dev.Context) -> None:
        self._ctx = ctx

    def push(self) -> None:
        """Make this context current on the calling thread."""
        self._bound.driver.push(self._ctx)

    @classmethod
    def pop(cls) -> None:
        """Pop the calling thread's current context."""
        cls._bound.driver.pop()

    @classmethod
    def get_current(cls) -> Any:
        """The calling thread's current context, or None."""
        ctx = cls._bound.driver.current()
        return None if ctx is None else cls._bound.wrap(ctx)

    @classmethod
    def get_device(cls) -> Any:
        """The device of the current context."""
        cls._bound.driver.require("cuCtxGetDevice")
        return cls._bound.classes["Device"](0)

    @classmethod
    def synchronize(cls) -> None:
        """Wait for all work of the current context (fails while one of its streams captures)."""
        driver = cls._bound.driver
        _call("cuCtxSynchronize", driver.streams.synchronize_context, driver.require("cuCtxSynchronize"))

    def detach(self) -> None:
        """Release this context (a non-primary one is destroyed, with its memory)."""
        driver = self._bound.driver
        if not self._ctx.alive:
            raise LogicError("context::detach failed: invalid device context - cannot detach from invalid context")
        if driver.current() is self._ctx:
            driver.pop()
        driver.release(self._ctx)


class Device:
    """pycuda.driver.Device (one simulated GPU: ordinal 0)."""

    _bound: ClassVar[_Bound]

    def __init__(self, number: int) -> None:
        if not self._bound.driver.initialized:
            raise LogicError("cuDeviceGet failed: initialization error")
        if number != 0:
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self._number = number

    @classmethod
    def count(cls) -> int:
        """Number of devices."""
        if not cls._bound.driver.initialized:
            raise LogicError("cuDeviceGetCount failed: initialization error")
        return 1

    def name(self) -> str:
        """The GPU's name."""
        return self._bound.driver.gpu.name

    def compute_capability(self) -> tuple[int, int]:
        """(major, minor)."""
        return self._bound.driver.gpu.cc

    def total_memory(self) -> int:
        """Device memory in bytes."""
        return self._bound.driver.gpu.memory_mib * 2**20

    def make_context(self, flags: int = 0) -> Any:
        """A new non-primary context, pushed on the calling thread."""
        return self._bound.wrap(self._bound.driver.create_context())

    def retain_primary_context(self) -> Any:
        """The primary context (not pushed)."""
        return self._bound.wrap(self._bound.driver.retain_primary())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other._number == self._number

    def __hash__(self) -> int:
        return self._number


class DeviceAllocation:
    """pycuda.driver.DeviceAllocation: `int(a)` is the device address; freed when garbage collected."""

    _bound: ClassVar[_Bound]

    def __init__(self, base: int) -> None:
        self._trtsim_base: int | None = base

    def __int__(self) -> int:
        return _address(self)

    __index__ = __int__

    def free(self) -> None:
        """Free the memory now."""
        if self._trtsim_base is None:
            raise LogicError("device_allocation::free failed: invalid resource handle")
        base, self._trtsim_base = self._trtsim_base, None
        self._bound.driver.free(base)

    def __del__(self) -> None:
        if getattr(self, "_trtsim_base", None) is not None:
            with contextlib.suppress(LogicError):  # its context (and with it the memory) is already gone
                self.free()


class Stream:
    """pycuda.driver.Stream of the current context (flags 1: CU_STREAM_NON_BLOCKING)."""

    _bound: ClassVar[_Bound]

    def __init__(self, flags: int = 0) -> None:
        driver = self._bound.driver
        self.handle = driver.create_stream(driver.require("cuStreamCreate"), blocking=not flags & 1)

    def _context(self, op: str) -> dev.Context:
        ctx = self._bound.driver.stream_context(self.handle)
        if ctx is None:
            raise LogicError(f"{op} failed: invalid resource handle")
        return ctx

    def synchronize(self) -> None:
        """Wait until the stream's work is done (it runs now)."""
        ctx = self._context("cuStreamSynchronize")
        _call("cuStreamSynchronize", self._bound.driver.streams.synchronize, self.handle, ctx)

    def is_done(self) -> bool:
        """cuStreamQuery. The simulated GPU finishes the queued work when asked, so this waits for it (a
        program that polls sees it done; one that never asks never sees its effects)."""
        _call("cuStreamQuery", self._bound.driver.streams.synchronize, self.handle, self._context("cuStreamQuery"))
        return True


class Event:
    """pycuda.driver.Event: records the host time at which the simulated GPU reaches it."""

    _bound: ClassVar[_Bound]

    def __init__(self, flags: int = 0) -> None:
        self._bound.driver.require("cuEventCreate")
        self._work: Work | None = None
        self._time: list[float | None] | None = None  # the time cell of the latest record
        self._captured = False

    def record(self, stream: Any = None) -> Event:
        """Record the event on `stream` (None: the legacy default stream)."""
        driver = self._bound.driver
        ctx = driver.require("cuEventRecord")
        _check_stream(driver, stream, ctx, "cuEventRecord")
        cell: list[float | None] = [None]

        def reached() -> None:
            cell[0] = time.perf_counter()

        handle = 0 if stream is None else int(stream.handle)
        self._work = _call("cuEventRecord", driver.streams.enqueue, handle, ctx, "event record", reached)
        self._captured = self._work is None
        self._time = cell
        return self

    def _reach(self, op: str) -> None:
        if self._captured:
            raise LogicError(f"{op} failed: {CudaFailure('CUDA_ERROR_CAPTURED_EVENT')}")
        _call(op, self._bound.driver.streams.wait, self._work)

    def synchronize(self) -> Event:
        """Wait for the event (the work before it runs now)."""
        self._reach("cuEventSynchronize")
        return self

    def query(self) -> bool:
        """cuEventQuery; like `Stream.is_done`, asking makes the simulated GPU finish the work before it."""
        self._reach("cuEventQuery")
        return True

    def time_since(self, event: Event) -> float:
        """Milliseconds from `event` to this one (both must have been reached)."""
        if self._time is None or event._time is None or self._captured or event._captured:
            raise LogicError("cuEventElapsedTime failed: invalid resource handle")
        end, start = self._time[0], event._time[0]
        if end is None or start is None:
            raise dev.CudaRuntimeError("cuEventElapsedTime failed: device not ready")
        return (end - start) * 1000.0

    def time_till(self, event: Event) -> float:
        """Milliseconds from this event to `event`."""
        return event.time_since(self)


def _call(op: str, func: Any, *args: Any) -> Any:
    """`func(*args)`, a CudaFailure raised as pycuda raises the CUresult of `op`."""
    try:
        return func(*args)
    except CudaFailure as exc:
        cls = dev.CudaRuntimeError if exc.code == "CUDA_ERROR_NOT_READY" else LogicError
        raise cls(f"{op} failed: {exc}") from None


def _address(obj: Any) -> int:
    if isinstance(obj, int):
        return obj
    if isinstance(obj, DeviceAllocation):
        if obj._trtsim_base is None:
            raise LogicError("invalid argument: the device allocation was freed")
        return obj._trtsim_base
    raise TypeError(f"expected a DeviceAllocation or an int device address, got {type(obj).__name__}")


def _bytes_of(host: Any) -> memoryview:
    view = memoryview(host)
    if not view.c_contiguous:
        raise LogicError("host buffer is not contiguous")
    return view.cast("B")


def _check_stream(driver: Driver, stream: Any, ctx: dev.Context, op: str) -> None:
    if stream is not None and driver.stream_context(int(stream.handle)) is not ctx:
        raise LogicError(f"{op} failed: invalid resource handle (the stream is not of the current context)")


def _handle(driver: Driver, stream: Any, op: str) -> tuple[dev.Context, int]:
    ctx = driver.require(op)
    _check_stream(driver, stream, ctx, op)
    return ctx, 0 if stream is None else int(stream.handle)


def _copy(driver: Driver, op: str, run: Any, host: memoryview, stream: Any, sync: bool) -> None:
    """Enqueue the copy (the async calls) or run it after all earlier work (the synchronous ones)."""
    ctx, handle = _handle(driver, stream, op)
    if sync:
        _call(op, driver.streams.run_now, ctx, op, run)
    else:
        _call(op, driver.streams.enqueue, handle, ctx, op, run, host)


def _device_range(driver: Driver, op: str, address: int, nbytes: int) -> None:
    try:
        driver.find(address, nbytes)
    except DeviceAccessError as exc:
        raise LogicError(f"{op} failed: invalid argument ({exc})") from None


def _htod(driver: Driver, op: str, sync: bool, dest: Any, src: Any, stream: Any = None) -> None:
    view, address = _bytes_of(src), _address(dest)
    _device_range(driver, op, address, view.nbytes)

    def run() -> None:  # reads the host buffer when the copy runs, not when it was queued
        try:
            driver.write(address, view)
        except DeviceAccessError as exc:  # freed since: the DMA faults
            raise CudaFailure("CUDA_ERROR_ILLEGAL_ADDRESS", str(exc)) from None

    _copy(driver, op, run, view, stream, sync)


def _dtoh(driver: Driver, op: str, sync: bool, dest: Any, src: Any, stream: Any = None) -> None:
    view, address = _bytes_of(dest), _address(src)
    _device_range(driver, op, address, view.nbytes)

    def run() -> None:  # the host buffer changes only when the copy runs
        try:
            view[:] = driver.read(address, view.nbytes)
        except DeviceAccessError as exc:
            raise CudaFailure("CUDA_ERROR_ILLEGAL_ADDRESS", str(exc)) from None

    _copy(driver, op, run, view, stream, sync)


def _init(driver: Driver, flags: int = 0) -> None:
    driver.initialized = True


def _mem_alloc(bound: _Bound, nbytes: int) -> Any:
    ctx = bound.driver.require("cuMemAlloc")
    _call("cuMemAlloc", bound.driver.streams.check_unsafe_call, ctx, "cuMemAlloc")  # s11: not during a capture
    return bound.classes["DeviceAllocation"](bound.driver.alloc(int(nbytes), ctx))


def _mem_get_info(driver: Driver) -> tuple[int, int]:
    driver.require("cuMemGetInfo")
    total = driver.gpu.memory_mib * 2**20
    return total - driver.bytes_in_use(), total


def _pagelocked_empty(driver: Driver, shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    driver.require("cuMemHostAlloc")  # page-locked host memory needs a current context
    array: np.ndarray = np.empty(shape, dtype, order=order)  # type: ignore[call-overload]
    driver.streams.pin(array)  # a capture accepts copies to and from it (s11)
    return array


def _functions(bound: _Bound) -> dict[str, Any]:
    driver = bound.driver
    return {
        "init": functools.partial(_init, driver),
        "mem_alloc": functools.partial(_mem_alloc, bound),
        "mem_get_info": functools.partial(_mem_get_info, driver),
        "pagelocked_empty": functools.partial(_pagelocked_empty, driver),
        "memcpy_htod": functools.partial(_htod, driver, "cuMemcpyHtoD", True),
        "memcpy_dtoh": functools.partial(_dtoh, driver, "cuMemcpyDtoH", True),
        "memcpy_htod_async": functools.partial(_htod, driver, "cuMemcpyHtoDAsync", False),
        "memcpy_dtoh_async": functools.partial(_dtoh, driver, "cuMemcpyDtoHAsync", False),
    }


def _missing(name: str) -> Any:
    raise AttributeError(f"module 'pycuda.driver' has no attribute '{name}' (not part of trtsim's simulated pycuda)")


def build_pycuda(driver: Driver) -> tuple[types.ModuleType, types.ModuleType]:
    """The `pycuda` package and its `pycuda.driver` module, bound to `driver`."""
    bound = _Bound(driver)
    mod = types.ModuleType("pycuda.driver", "Simulated pycuda.driver (ghost_deploy.testing.trtsim)")
    for base in (Context, Device, DeviceAllocation, Stream, Event):
        ns = {"_bound": bound, "__module__": "pycuda._driver", "__qualname__": base.__name__}
        bound.classes[base.__name__] = type(base.__name__, (base,), ns)
    names: dict[str, Any] = {**bound.classes, **_functions(bound), "__getattr__": _missing}
    names.update({"Error": dev.Error, "LogicError": dev.LogicError, "LaunchError": dev.LaunchError})
    names.update({"RuntimeError": dev.CudaRuntimeError, "MemoryError": dev.CudaMemoryError})
    for key, value in names.items():
        setattr(mod, key, value)
    package = types.ModuleType("pycuda", "Simulated pycuda (ghost_deploy.testing.trtsim)")
    package.__path__ = []
    package.driver = mod  # type: ignore[attr-defined]
    return package, mod


def run_autoinit(module: types.ModuleType, driver_module: types.ModuleType) -> None:
    """`import pycuda.autoinit`: init, then a NEW (non-primary) context on device 0, current on this thread (s8)."""
    driver_module.init()
    module.device = driver_module.Device(0)  # type: ignore[attr-defined]
    module.context = module.device.make_context()  # type: ignore[attr-defined]


def run_autoprimaryctx(module: types.ModuleType, driver_module: types.ModuleType) -> None:
    """`import pycuda.autoprimaryctx`: init, retain device 0's primary context and push it on this thread."""
    driver_module.init()
    module.device = driver_module.Device(0)  # type: ignore[attr-defined]
    module.context = module.device.retain_primary_context()  # type: ignore[attr-defined]
    module.context.push()  # type: ignore[attr-defined]
