"""The simulated `pycuda`, `pycuda.driver`, and the import effects of `pycuda.autoinit` / `pycuda.autoprimaryctx`.

tensorrt.md s8: the <= 8.5 samples use `import pycuda.autoprimaryctx` (falling back to `pycuda.autoinit`),
`cuda.mem_alloc`, `pagelocked_empty`, `memcpy_htod_async(dev, host, stream)`, `cuda.Stream()` and `int(devptr)`.
Everything runs synchronously; events record host time. Each installation gets its own subclasses of the
classes below, bound to its `Driver`.
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
        """Wait for the current context's work (all simulated work is already done)."""
        cls._bound.driver.require("cuCtxSynchronize")

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
    """pycuda.driver.Stream of the current context."""

    _bound: ClassVar[_Bound]

    def __init__(self, flags: int = 0) -> None:
        driver = self._bound.driver
        self.handle = driver.create_stream(driver.require("cuStreamCreate"))

    def synchronize(self) -> None:
        """Wait for the stream (its work is done when queued)."""
        if self._bound.driver.stream_context(self.handle) is None:
            raise LogicError("cuStreamSynchronize failed: invalid resource handle")

    def is_done(self) -> bool:
        """Whether the queued work is done (always)."""
        return True


class Event:
    """pycuda.driver.Event: records the host time at `record`."""

    _bound: ClassVar[_Bound]

    def __init__(self, flags: int = 0) -> None:
        self._bound.driver.require("cuEventCreate")
        self._time: float | None = None

    def record(self, stream: Any = None) -> Event:
        """Record the event on `stream`."""
        _check_stream(self._bound.driver, stream, self._bound.driver.require("cuEventRecord"), "cuEventRecord")
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


def _htod(driver: Driver, op: str, dest: Any, src: Any, stream: Any = None) -> None:
    _check_stream(driver, stream, driver.require(op), op)
    try:
        driver.write(_address(dest), _bytes_of(src))
    except DeviceAccessError as exc:
        raise LogicError(f"{op} failed: invalid argument ({exc})") from None


def _dtoh(driver: Driver, op: str, dest: Any, src: Any, stream: Any = None) -> None:
    _check_stream(driver, stream, driver.require(op), op)
    view = _bytes_of(dest)
    try:
        view[:] = driver.read(_address(src), view.nbytes)
    except DeviceAccessError as exc:
        raise LogicError(f"{op} failed: invalid argument ({exc})") from None


def _init(driver: Driver, flags: int = 0) -> None:
    driver.initialized = True


def _mem_alloc(bound: _Bound, nbytes: int) -> Any:
    return bound.classes["DeviceAllocation"](bound.driver.alloc(int(nbytes), bound.driver.require("cuMemAlloc")))


def _mem_get_info(driver: Driver) -> tuple[int, int]:
    driver.require("cuMemGetInfo")
    total = driver.gpu.memory_mib * 2**20
    return total - driver.bytes_in_use(), total


def _pagelocked_empty(driver: Driver, shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    driver.require("cuMemHostAlloc")  # page-locked host memory needs a current context
    return np.empty(shape, dtype, order=order)  # type: ignore[call-overload,no-any-return]


def _functions(bound: _Bound) -> dict[str, Any]:
    driver = bound.driver
    return {
        "init": functools.partial(_init, driver),
        "mem_alloc": functools.partial(_mem_alloc, bound),
        "mem_get_info": functools.partial(_mem_get_info, driver),
        "pagelocked_empty": functools.partial(_pagelocked_empty, driver),
        "memcpy_htod": functools.partial(_htod, driver, "cuMemcpyHtoD"),
        "memcpy_dtoh": functools.partial(_dtoh, driver, "cuMemcpyDtoH"),
        "memcpy_htod_async": functools.partial(_htod, driver, "cuMemcpyHtoDAsync"),
        "memcpy_dtoh_async": functools.partial(_dtoh, driver, "cuMemcpyDtoHAsync"),
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
