"""The simulated `pycuda`, `pycuda.driver`, and the import effects of `pycuda.autoinit` / `pycuda.autoprimaryctx`.

tensorrt.md s8: the <= 8.5 samples use `import pycuda.autoprimaryctx` (falling back to `pycuda.autoinit`),
`cuda.mem_alloc`, `pagelocked_empty`, `memcpy_htod_async(dev, host, stream)`, `cuda.Stream()` and `int(devptr)`.
Everything runs synchronously; events record host time.
"""

from __future__ import annotations

import contextlib
import time
import types
from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim import device as dev
from ghost_deploy.testing.trtsim.device import DeviceAccessError, Driver, LogicError


def _address(obj: Any) -> int:
    if isinstance(obj, int):
        return obj
    if hasattr(obj, "_trtsim_base"):
        if obj._trtsim_base is None:
            raise LogicError("invalid argument: the device allocation was freed")
        return int(obj._trtsim_base)
    raise TypeError(f"expected a DeviceAllocation or an int device address, got {type(obj).__name__}")


def _bytes_of(host: Any) -> memoryview:
    view = memoryview(host)
    if not view.c_contiguous:
        raise LogicError("host buffer is not contiguous")
    return view.cast("B")


def _copy_functions(driver: Driver) -> dict[str, Any]:
    def check_stream(stream: Any, ctx: dev.Context, op: str) -> None:
        if stream is not None and driver.stream_context(int(stream.handle)) is not ctx:
            raise LogicError(f"{op} failed: invalid resource handle (the stream is not of the current context)")

    def htod(dest: Any, src: Any, stream: Any = None, op: str = "cuMemcpyHtoD") -> None:
        ctx = driver.require(op)
        check_stream(stream, ctx, op)
        try:
            driver.write(_address(dest), _bytes_of(src))
        except DeviceAccessError as exc:
            raise LogicError(f"{op} failed: invalid argument ({exc})") from None

    def dtoh(dest: Any, src: Any, stream: Any = None, op: str = "cuMemcpyDtoH") -> None:
        ctx = driver.require(op)
        check_stream(stream, ctx, op)
        view = _bytes_of(dest)
        try:
            view[:] = driver.read(_address(src), view.nbytes)
        except DeviceAccessError as exc:
            raise LogicError(f"{op} failed: invalid argument ({exc})") from None

    return {
        "memcpy_htod": lambda dest, src: htod(dest, src),
        "memcpy_dtoh": lambda dest, src: dtoh(dest, src),
        "memcpy_htod_async": lambda dest, src, stream=None: htod(dest, src, stream, "cuMemcpyHtoDAsync"),
        "memcpy_dtoh_async": lambda dest, src, stream=None: dtoh(dest, src, stream, "cuMemcpyDtoHAsync"),
    }


def build_pycuda(driver: Driver) -> tuple[types.ModuleType, types.ModuleType]:
    """The `pycuda` package and its `pycuda.driver` module, bound to `driver`."""
    wrappers: dict[int, Context] = {}

    class Context:
        """pycuda.driver.Context."""

        def __init__(self, ctx: dev.Context) -> None:
            self._ctx = ctx

        def push(self) -> None:
            """Make this context current on the calling thread."""
            driver.push(self._ctx)

        @staticmethod
        def pop() -> None:
            """Pop the calling thread's current context."""
            driver.pop()

        @staticmethod
        def get_current() -> Context | None:
            """The calling thread's current context, or None."""
            ctx = driver.current()
            return None if ctx is None else wrap(ctx)

        @staticmethod
        def get_device() -> Device:
            """The device of the current context."""
            driver.require("cuCtxGetDevice")
            return Device(0)

        @staticmethod
        def synchronize() -> None:
            """Wait for the current context's work (all simulated work is already done)."""
            driver.require("cuCtxSynchronize")

        def detach(self) -> None:
            """Release this context (a non-primary one is destroyed, with its memory)."""
            if not self._ctx.alive:
                raise LogicError("context::detach failed: invalid device context - cannot detach from invalid context")
            if driver.current() is self._ctx:
                driver.pop()
            driver.release(self._ctx)

    def wrap(ctx: dev.Context) -> Context:
        return wrappers.setdefault(ctx.ident, Context(ctx))

    class Device:
        """pycuda.driver.Device (one simulated GPU: ordinal 0)."""

        def __init__(self, number: int) -> None:
            if not driver.initialized:
                raise LogicError("cuDeviceGet failed: initialization error")
            if number != 0:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self._number = number

        @staticmethod
        def count() -> int:
            """Number of devices."""
            if not driver.initialized:
                raise LogicError("cuDeviceGetCount failed: initialization error")
            return 1

        def name(self) -> str:
            """The GPU's name."""
            return driver.gpu.name

        def compute_capability(self) -> tuple[int, int]:
            """(major, minor)."""
            return driver.gpu.cc

        def total_memory(self) -> int:
            """Device memory in bytes."""
            return driver.gpu.memory_mib * 2**20

        def make_context(self, flags: int = 0) -> Context:
            """A new non-primary context, pushed on the calling thread."""
            return wrap(driver.create_context())

        def retain_primary_context(self) -> Context:
            """The primary context (not pushed)."""
            return wrap(driver.retain_primary())

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Device) and other._number == self._number

        def __hash__(self) -> int:
            return self._number

    class DeviceAllocation:
        """pycuda.driver.DeviceAllocation: `int(a)` is the device address."""

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
            driver.free(base)

        def __del__(self) -> None:
            if getattr(self, "_trtsim_base", None) is not None:
                with contextlib.suppress(LogicError):  # its context (and with it the memory) is already gone
                    self.free()

    class Stream:
        """pycuda.driver.Stream of the current context."""

        def __init__(self, flags: int = 0) -> None:
            self.handle = driver.create_stream(driver.require("cuStreamCreate"))

        def synchronize(self) -> None:
            """Wait for the stream (its work is done when queued)."""
            if driver.stream_context(self.handle) is None:
                raise LogicError("cuStreamSynchronize failed: invalid resource handle")

        def is_done(self) -> bool:
            """Whether the queued work is done (always)."""
            return True

    class Event:
        """pycuda.driver.Event: records the host time at `record`."""

        def __init__(self, flags: int = 0) -> None:
            driver.require("cuEventCreate")
            self._time: float | None = None

        def record(self, stream: Any = None) -> Event:
            """Record the event on `stream`."""
            ctx = driver.require("cuEventRecord")
            if stream is not None and driver.stream_context(int(stream.handle)) is not ctx:
                raise LogicError("cuEventRecord failed: invalid resource handle")
            self._time = time.perf_counter()
            return self

        def synchronize(self) -> Event:
            """Wait for the event."""
            return self

        def query(self) -> bool:
            """Whether the event has happened."""
            return True

        def time_since(self, event: Event) -> float:
            """Milliseconds from `event` to this one."""
            if self._time is None or event._time is None:
                raise LogicError("cuEventElapsedTime failed: invalid resource handle")
            return (self._time - event._time) * 1000.0

        def time_till(self, event: Event) -> float:
            """Milliseconds from this event to `event`."""
            return event.time_since(self)

    def init(flags: int = 0) -> None:
        """cuInit."""
        driver.initialized = True

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        """Allocate device memory in the current context."""
        return DeviceAllocation(driver.alloc(int(nbytes), driver.require("cuMemAlloc")))

    def mem_get_info() -> tuple[int, int]:
        """(free, total) device memory in bytes."""
        driver.require("cuMemGetInfo")
        total = driver.gpu.memory_mib * 2**20
        return total - driver.bytes_in_use(), total

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        """Page-locked host memory (a numpy array; needs a current context like cuMemHostAlloc)."""
        driver.require("cuMemHostAlloc")
        return np.empty(shape, dtype, order=order)  # type: ignore[call-overload,no-any-return]

    for cls in (Context, Device, DeviceAllocation, Stream, Event):
        cls.__module__, cls.__qualname__ = "pycuda._driver", cls.__name__
    mod = types.ModuleType("pycuda.driver", "Simulated pycuda.driver (ghost_deploy.testing.trtsim)")
    names: dict[str, Any] = {"Context": Context, "Device": Device, "DeviceAllocation": DeviceAllocation}
    names.update({"Stream": Stream, "Event": Event, "init": init, "mem_alloc": mem_alloc, "mem_get_info": mem_get_info})
    names.update({"pagelocked_empty": pagelocked_empty, **_copy_functions(driver)})
    names.update({"Error": dev.Error, "LogicError": dev.LogicError, "LaunchError": dev.LaunchError})
    names.update({"RuntimeError": dev.CudaRuntimeError, "MemoryError": dev.CudaMemoryError})
    for key, value in names.items():
        setattr(mod, key, value)
    setattr(mod, "__getattr__", _missing("pycuda.driver"))  # noqa: B010 - a module-level __getattr__
    package = types.ModuleType("pycuda", "Simulated pycuda (ghost_deploy.testing.trtsim)")
    package.__path__ = []
    package.driver = mod  # type: ignore[attr-defined]
    return package, mod


def _missing(module: str) -> Any:
    def __getattr__(name: str) -> Any:
        raise AttributeError(f"module '{module}' has no attribute '{name}' (not part of trtsim's simulated pycuda)")

    return __getattr__


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
