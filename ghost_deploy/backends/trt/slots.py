"""What an active TensorRT runner holds: the engine, and its slots (an execution context with a stream and
buffers, in which one inference runs at a time); `runner.TensorRTRunner` hands them to its calls."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_deploy.errors import StepFailed

if TYPE_CHECKING:
    import tensorrt as trt


@dataclasses.dataclass
class Buffer:
    """A tensor's pinned host array and its device allocation, of the shape the context reports."""

    host: np.ndarray
    device: Any  # pycuda.driver.DeviceAllocation (pycuda ships no type information)


@dataclasses.dataclass
class Slot:
    """One execution context with its own stream and buffers: one inference at a time runs in it."""

    context: trt.IExecutionContext
    stream: Any
    buffers: dict[str, Buffer] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Live:
    """Everything an active runner holds."""

    api: Any  # the tensorrt module (named so that it does not shadow `trt` in the annotations below)
    cuda: Any  # pycuda.driver
    cuda_context: Any  # the device's primary context, retained
    engine: trt.ICudaEngine
    names: list[str]
    inputs: list[str]
    slots: list[Slot] = dataclasses.field(default_factory=list)  # every slot made (the pool's and `staged`)
    idle: list[Slot] = dataclasses.field(default_factory=list)  # the pool's slots no call is using
    pooled: int = 0  # slots the pool made (or is making)
    pool: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    staged: Slot | None = None  # the slot of the stage calls
    stage_lock: Any = dataclasses.field(default_factory=threading.RLock)  # the stage calls, one thread at a time
    profiler: Any = None


def output_copies(live: Live, slot: Slot) -> dict[str, np.ndarray]:
    """Copies of a slot's output host buffers."""
    return {name: b.host.copy() for name, b in slot.buffers.items() if name not in live.inputs}


def sized_buffer(live: Live, slot: Slot, name: str, dtype: np.dtype[Any]) -> Buffer:
    """Pinned host and device buffers of the shape the context reports, reallocated when it changes."""
    shape = tuple(ints(slot.context.get_tensor_shape(name)))
    if any(d < 0 for d in shape):
        raise StepFailed(f"TensorRT reports no shape for {name!r} yet ({list(shape)}): set every input first")
    current = slot.buffers.get(name)
    if current is None or current.host.shape != shape or current.host.dtype != dtype:
        if current is not None:
            current.device.free()
        host = live.cuda.pagelocked_empty(shape, dtype)
        slot.buffers[name] = Buffer(host, live.cuda.mem_alloc(max(host.nbytes, 1)))
    return slot.buffers[name]


def ints(dims: trt.Dims) -> list[int]:
    """A TensorRT Dims as a list (the stubs declare indexing, not iteration)."""
    return [int(dims[i]) for i in range(len(dims))]
