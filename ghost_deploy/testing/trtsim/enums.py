"""pybind11 enums: members with `.name`, `.value`, `int()`, hashing, strict comparison (TensorRT's enums are C++
`enum class`, so a member never equals a plain int) and, for `py::arithmetic()` enums, ordering and bit ops."""

from __future__ import annotations

from typing import Any, ClassVar

from ghost_deploy.testing.trtsim.apispec import EnumSpec


class PybindEnum:
    """Base of every simulated enum class."""

    __slots__ = ("_trtsim_value",)
    _trtsim_value: int
    __members__: ClassVar[dict[str, PybindEnum]] = {}
    _arithmetic: ClassVar[bool] = False

    def __new__(cls, value: int) -> PybindEnum:  # pybind11: __init__(self, value: int)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"__init__(): incompatible constructor arguments for {cls.__name__}: {value!r}")
        for member in cls.__members__.values():
            if member._trtsim_value == value:
                return member
        return _make(cls, value)

    @property
    def name(self) -> str:
        """The member's name ('???' for a value that names no member, as pybind11 prints it)."""
        for key, member in type(self).__members__.items():
            if member._trtsim_value == self._trtsim_value:
                return key
        return "???"

    @property
    def value(self) -> int:
        """The member's integer value."""
        return self._trtsim_value

    def __int__(self) -> int:
        return self._trtsim_value

    def __index__(self) -> int:
        return self._trtsim_value

    def __hash__(self) -> int:
        return hash(self._trtsim_value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {self._trtsim_value}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._trtsim_value == self._trtsim_value  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def _other(self, other: Any, op: str) -> int:
        if not type(self)._arithmetic:
            raise TypeError(
                f"unsupported operand type(s) for {op}: '{type(self).__name__}' and '{type(other).__name__}'"
            )
        if type(other) is not type(self):
            raise TypeError("Expected an enumeration of matching type!")
        return int(other._trtsim_value)

    def __lt__(self, other: Any) -> bool:
        return self._trtsim_value < self._other(other, "<")

    def __le__(self, other: Any) -> bool:
        return self._trtsim_value <= self._other(other, "<=")

    def __gt__(self, other: Any) -> bool:
        return self._trtsim_value > self._other(other, ">")

    def __ge__(self, other: Any) -> bool:
        return self._trtsim_value >= self._other(other, ">=")

    def __and__(self, other: Any) -> int:
        return self._trtsim_value & self._other(other, "&")

    def __or__(self, other: Any) -> int:
        return self._trtsim_value | self._other(other, "|")

    def __xor__(self, other: Any) -> int:
        return self._trtsim_value ^ self._other(other, "^")

    __rand__ = __and__
    __ror__ = __or__
    __rxor__ = __xor__

    def __invert__(self) -> int:
        self._other(self, "~")
        return ~self._trtsim_value

    def __setattr__(self, key: str, value: Any) -> None:
        if key != "_trtsim_value" or hasattr(self, "_trtsim_value"):
            raise AttributeError(f"'{type(self).__name__}' object attribute '{key}' is read-only")
        object.__setattr__(self, key, value)


def _make(cls: type[PybindEnum], value: int) -> PybindEnum:
    obj = object.__new__(cls)
    object.__setattr__(obj, "_trtsim_value", value)
    return obj


def make_enum(spec: EnumSpec, extra: dict[str, Any]) -> type[PybindEnum]:
    """The enum class for `spec`, each value its C++ enumerator's integer (`spec.numbers`, from the release's
    headers). Two names of one integer (BuilderFlag.STRIP_PLAN and the deprecated WEIGHTLESS, declared
    `kWEIGHTLESS = kSTRIP_PLAN`) are one member: equal, one hash, and `.name` is the first declared, as
    pybind11's `name` returns the first entry whose value matches."""
    namespace: dict[str, Any] = {"__slots__": (), "__module__": "tensorrt", "_arithmetic": spec.arithmetic, **extra}
    namespace["__qualname__"] = spec.qualname
    cls: type[PybindEnum] = type(spec.name, (PybindEnum,), namespace)
    by_value: dict[int, PybindEnum] = {}
    members: dict[str, PybindEnum] = {}
    for (name, _cpp), number in zip(spec.values, spec.numbers, strict=True):
        members[name] = by_value.setdefault(number, _make(cls, number))
        setattr(cls, name, members[name])
    cls.__members__ = members
    return cls


def distinct(cls: type[PybindEnum]) -> list[PybindEnum]:
    """The members of an enum class, each once (an alias is not a second member)."""
    return list({id(m): m for m in cls.__members__.values()}.values())


def member_by_cpp(spec: EnumSpec, cls: type[PybindEnum], cpp: str) -> PybindEnum | None:
    """The member whose C++ enumerator is `cpp` ('ILogger::Severity::kWARNING'), or None."""
    cpp = cpp.removeprefix("nvinfer1::")
    for name, enumerator in spec.values:
        if enumerator.removeprefix("nvinfer1::") == cpp:
            return cls.__members__[name]
    return None
