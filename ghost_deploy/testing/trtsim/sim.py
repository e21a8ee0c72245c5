"""What every simulated TensorRT object shares: the `Sim` of its installation, and the `State` behind it.

A simulated object (e.g. `tensorrt.Builder`) is a generated class whose methods bind their arguments as
pybind11 would and then call the method of the same name on the object's `State` (dunder `__x__` -> `op_x`).
A name the state lacks exists on the surface but raises NotImplementedError("simulated: ...").
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ghost_deploy.testing.trtsim.apispec import ApiSpec
from ghost_deploy.testing.trtsim.binding import ArgTypeError
from ghost_deploy.testing.trtsim.enums import PybindEnum, member_by_cpp
from ghost_deploy.testing.trtsim.versions import SimulatedGPU, version_tuple

if TYPE_CHECKING:
    from types import ModuleType

    from ghost_deploy.testing.trtsim.device import Driver


class Sim:
    """One installed simulation: the API description, the version, the GPU and the CUDA driver state."""

    def __init__(self, spec: ApiSpec, version: str, gpu: SimulatedGPU, driver: Driver) -> None:
        self.spec = spec
        self.version = version
        self.vt = version_tuple(version)
        self.gpu = gpu
        self.driver = driver
        self.alive = True
        self.classes: dict[str, type] = {}
        self.enums: dict[str, type[PybindEnum]] = {}
        self.module: ModuleType | None = None

    @property
    def major(self) -> int:
        """The major version (8, 10, 11)."""
        return self.vt[0]

    def has_member(self, enum: str, name: str) -> bool:
        """Whether enum `enum` has member `name` on this version."""
        cls = self.enums.get(enum)
        return cls is not None and name in cls.__members__

    def member(self, enum: str, name: str) -> PybindEnum:
        """The member `enum.name`, which must exist on this version."""
        return self.enums[enum].__members__[name]

    def default(self, expr: str) -> Any:
        """The Python value of a C++ default argument expression from the API description."""
        if expr == "nullptr":
            return None
        if expr in ("true", "false"):
            return expr == "true"
        if expr == '""':
            return ""
        if re.fullmatch(r"-?\d+U?", expr):
            return int(expr.rstrip("U"))
        for qualname, spec in self.spec.enums.items():
            found = member_by_cpp(spec, self.enums[qualname], expr)
            if found is not None:
                return found
        raise NotImplementedError(f"simulated: the default argument {expr} on TensorRT {self.version}")

    def new(self, cls_name: str, state: State) -> Any:
        """A surface object of class `cls_name` backed by `state` (not through its constructor)."""
        cls = self.classes[cls_name]
        obj: Any = object.__new__(cls)
        obj._trtsim = state
        return obj

    def unsupported(self, what: str) -> NotImplementedError:
        """The error for a behaviour the reference does not describe."""
        return NotImplementedError(f"simulated: {what} on TensorRT {self.version}")

    def log(self, logger: Any, severity: str, message: str) -> None:
        """Report through the user's ILogger, as TensorRT does (`logger.log(Severity.X, msg)`)."""
        if logger is not None:
            logger.log(self.member("ILogger.Severity", severity), message)

    def expect_enum(self, value: Any, enum: str) -> PybindEnum:
        """`value` if it is a member of `enum`; otherwise the call matches no overload (pybind11 TypeError)."""
        if not isinstance(value, self.enums[enum]):
            raise ArgTypeError(enum)
        return value

    def expect(self, value: Any, cls_name: str, allow_none: bool = False) -> Any:
        """`value` if it is an instance of the simulated class `cls_name` (or None when allowed)."""
        if value is None and allow_none:
            return None
        if not isinstance(value, self.classes[cls_name]):
            raise ArgTypeError(cls_name)
        return value


class Unsimulated:
    """The value of a property TensorRT has but the simulator does not simulate. Reading it succeeds, so
    `hasattr(obj, name)` is True as on TensorRT; every use of the value (truth, numbers, comparison, str,
    attributes, calls, iteration) raises NotImplementedError naming the property. Only `is` cannot be caught."""

    __slots__ = ("_message",)

    def __init__(self, message: str) -> None:
        object.__setattr__(self, "_message", message)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(object.__getattribute__(self, "_message"))

    def __getattr__(self, key: str) -> Any:
        return self._fail()

    def __repr__(self) -> str:
        return f"<{object.__getattribute__(self, '_message')}>"

    __bool__ = __int__ = __index__ = __float__ = __str__ = __format__ = __bytes__ = _fail
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _fail  # type: ignore[assignment]
    __call__ = __iter__ = __len__ = __getitem__ = __setitem__ = __contains__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __or__ = __ror__ = __and__ = __rand__ = _fail
    __setattr__ = _fail  # type: ignore[assignment]


class State:
    """The simulator-side object behind one surface object."""

    def __init__(self, sim: Sim) -> None:
        self._sim = sim


def state_of(obj: Any) -> Any:
    """The State behind a surface object (TypeError when the object was never initialised)."""
    state = getattr(obj, "_trtsim", None)
    if state is None:
        raise TypeError(f"{type(obj).__name__} object was never initialised (its base __init__ was not called)")
    return state


def as_shape(value: Any) -> tuple[int, ...]:
    """A shape from a Dims, tuple or list of ints (ArgTypeError otherwise)."""
    inner = getattr(value, "_trtsim", None)
    if inner is not None and hasattr(inner, "dims"):
        return tuple(inner.dims)
    if isinstance(value, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        return tuple(int(d) for d in value)
    raise ArgTypeError("Dims")


def as_bytes(value: Any) -> bytes:
    """The bytes of a buffer-protocol object (ArgTypeError otherwise)."""
    if isinstance(value, str):
        raise ArgTypeError("buffer")
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise ArgTypeError("buffer") from None
