"""Generate one version's `tensorrt` module from its API description: exactly its names, nothing else.

Every class, method, property, enum and module function of trt-api-V.json exists; any other name raises
AttributeError (the classes have `__slots__`, so instances take no new attributes, as pybind11 objects).
"""

from __future__ import annotations

import array
import os
import types
import warnings
from collections.abc import Callable
from typing import Any

from ghost_deploy.testing.trtsim.apispec import ClassSpec, OverloadSpec, PropertySpec
from ghost_deploy.testing.trtsim.binding import UNRESOLVED, ArgTypeError, bind, incompatible
from ghost_deploy.testing.trtsim.enums import make_enum
from ghost_deploy.testing.trtsim.sim import Sim, State, Unsimulated, state_of
from ghost_deploy.testing.trtsim.versions import python_version

Function = Callable[..., Any]


class PybindMeta(type):
    """pybind11 >= 2.6 (trt-api `build_assumptions`): a Python subclass whose `__init__` skips the base
    `__init__` fails at construction with TypeError (tensorrt.md s2: "You must call Base.__init__(self)")."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        if getattr(obj, "_trtsim", None) is None:
            base = next(k for k in cls.__mro__ if "_trtsim_sim" in k.__dict__)
            raise TypeError(f"tensorrt.{base.__name__}.__init__() must be called when overriding __init__")
        return obj


class PybindObject(metaclass=PybindMeta):
    """Root of the generated classes: the state slot, and no constructor unless the class binds one."""

    __slots__ = ("_trtsim",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"tensorrt.{type(self).__name__}: No constructor defined!")


def _impl_name(name: str) -> str:
    return "op_" + name.strip("_") if name.startswith("__") else name


def _find(state: Any, attr: str) -> Any:
    for klass in type(state).__mro__[:-1]:
        if attr in klass.__dict__:
            return klass.__dict__[attr]
    return vars(state).get(attr, _MISSING)


_MISSING = object()


def _warn(text: str | None) -> None:
    if text:
        message = text if " " in text else f"Use {text} instead."
        warnings.warn(message, DeprecationWarning, stacklevel=3)


def _live_state(obj: Any, sim: Sim) -> Any:
    if not sim.alive:
        raise RuntimeError("trtsim: this TensorRT object belongs to a simulation that has been uninstalled")
    return state_of(obj)


def _call(impl: Any, bound: dict[str, Any]) -> Any:
    if UNRESOLVED in bound:
        args, kwargs = bound[UNRESOLVED]
        return impl(*args, **kwargs)
    return impl(**bound)


def _method(sim: Sim, owner: str, name: str, overloads: tuple[OverloadSpec, ...]) -> Function:
    attr = _impl_name(name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        spec, bound = bind(name, overloads, args, kwargs, sim.default)
        _warn(spec.deprecated)
        state = _live_state(self, sim)
        if _find(state, attr) is _MISSING:
            raise sim.unsupported(f"{owner}.{name}")
        try:
            return _call(getattr(state, attr), bound)
        except ArgTypeError:
            raise incompatible(name, overloads, args, kwargs) from None

    method.__name__ = name
    method.__qualname__ = f"{owner}.{name}"
    return method


def _init(sim: Sim, owner: str, overloads: tuple[OverloadSpec, ...], state_cls: type[State] | None) -> Function:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        spec, bound = bind("__init__", overloads, args, kwargs, sim.default)
        _warn(spec.deprecated)
        if not sim.alive:
            raise RuntimeError("trtsim: this TensorRT class belongs to a simulation that has been uninstalled")
        factory = getattr(state_cls, "construct", None)
        if factory is None:
            raise sim.unsupported(f"{owner}.__init__")
        try:
            self._trtsim = _call(lambda **kw: factory(sim, owner, **kw), bound)
        except ArgTypeError:
            raise incompatible("__init__", overloads, args, kwargs) from None

    return __init__


def _property(sim: Sim, owner: str, spec: PropertySpec) -> Any:
    qual = f"{owner}.{spec.name}"

    def fget(self: Any) -> Any:
        _warn(spec.deprecated)
        state = _live_state(self, sim)
        if _find(state, spec.name) is _MISSING:  # real on TensorRT, so hasattr() is True; any use fails loudly
            return Unsimulated(str(sim.unsupported(qual)))
        return getattr(state, spec.name)

    def fset(self: Any, value: Any) -> None:
        _warn(spec.setter_deprecated)
        state = _live_state(self, sim)
        found = _find(state, spec.name)
        read_only = isinstance(found, property) and found.fset is None
        if found is _MISSING or read_only or isinstance(found, types.FunctionType):
            raise sim.unsupported(f"setting {qual}")
        try:
            setattr(state, spec.name, value)
        except ArgTypeError:
            raise TypeError(f"(): incompatible function arguments: {qual} cannot be set to {value!r}") from None

    if spec.static:
        return _StaticProperty(sim, qual)
    return property(fget if spec.readable else None, fset if spec.writable else None)


class _StaticProperty:
    """A property read on the class itself (pybind11 def_property_readonly_static)."""

    def __init__(self, sim: Sim, qualname: str) -> None:
        self._sim, self._qualname = sim, qualname

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return Unsimulated(str(self._sim.unsupported(self._qualname)))  # Dims.MAX_DIMS: not in the reference

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError("can't set attribute")


def _host_memory_guards(name: str) -> dict[str, Any]:
    """IHostMemory supports the buffer protocol (bytes(x), memoryview(x), file.write(x)) and nothing else: it is
    no `bytes` (pybind11 class with py::buffer_protocol(), pyFoundationalTypes.cpp), so len(), slicing,
    iteration, comparison with bytes, .decode() and pickling fail as on TensorRT."""

    def no(op: str) -> Function:
        def refuse(self: Any, *args: Any) -> Any:
            raise TypeError(f"'tensorrt.{name}' object does not support {op}")

        return refuse

    refused = ["__len__", "__iter__", "__getitem__", "__setitem__", "__delitem__", "__contains__", "__add__"]
    refused += ["__iadd__", "__mul__", "__imul__", "__rmul__", "__mod__", "__lt__", "__le__", "__gt__", "__ge__"]
    refused += ["__copy__", "__deepcopy__", "__reduce__", "__reduce_ex__"]
    guards: dict[str, Any] = {k: no(k) for k in refused}
    guards["__new__"] = lambda cls, *args, **kwargs: PybindObject.__init__(cls)  # "No constructor defined!"
    guards["__eq__"] = lambda self, other: self is other
    guards["__ne__"] = lambda self, other: self is not other
    guards["__hash__"] = lambda self: id(self) >> 4
    guards["__repr__"] = lambda self: f"<tensorrt.{name} object at {id(self):#x}>"
    guards["__str__"] = guards["__repr__"]

    def __getattribute__(self: Any, key: str) -> Any:
        if not key.startswith("__") and key not in type(self)._trtsim_names:
            raise AttributeError(f"'tensorrt.{name}' object has no attribute '{key}'")
        return array.array.__getattribute__(self, key)

    guards["__getattribute__"] = __getattribute__
    return guards


def _namespace(sim: Sim, spec: ClassSpec, state_cls: type[State] | None) -> dict[str, Any]:
    ns: dict[str, Any] = {"__slots__": (), "__module__": "tensorrt", "__qualname__": spec.name, "_trtsim_sim": sim}
    for name, overloads in spec.methods.items():
        if name == "__init__":
            ns[name] = _init(sim, spec.name, overloads, state_cls)
        elif name == "__del__":
            ns[name] = lambda self: None
        else:
            ns[name] = _method(sim, spec.name, name, overloads)
    if "__eq__" in spec.methods:
        ns["__hash__"] = None  # pybind11: a class defining __eq__ without __hash__ is unhashable
    for name, overloads in spec.static_methods.items():
        ns[name] = staticmethod(_module_function(sim, f"{spec.name}.{name}", overloads, None))
    for name, prop in spec.properties.items():
        ns[name] = _property(sim, spec.name, prop)
    for name, (kind, _value) in spec.added.items():
        if kind == "method":  # common_enter / common_exit (context managers): enter gives self, exit nothing
            ns[name] = (lambda self: self) if name == "__enter__" else (lambda self, *exc: None)
    return ns


def _make_class(sim: Sim, spec: ClassSpec, state_cls: type[State] | None) -> type:
    ns = _namespace(sim, spec, state_cls)
    bases = tuple(sim.classes[b] for b in spec.bases if b in sim.classes)
    if spec.buffer_protocol:  # an array.array of unsigned bytes lends its buffer; nothing else of it shows
        ns.update(_host_memory_guards(spec.name))
        ns.setdefault("__init__", PybindObject.__init__)
        ns["__slots__"] = ("_trtsim",)
        ns["_trtsim_names"] = frozenset(ns) | frozenset(dir(object)) | {"_trtsim"}
        return PybindMeta(spec.name, (array.array,), ns)
    return PybindMeta(spec.name, bases or (PybindObject,), ns)


def _ordered(classes: dict[str, ClassSpec]) -> list[str]:
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done or name not in classes:
            return
        for base in classes[name].bases:
            visit(base)
        done.append(name)

    for name in sorted(classes):
        visit(name)
    return done


def _resolve(sim: Sim, module: types.ModuleType, expr: str) -> Any:
    """A value expression of the API description ('ILogger.Severity.ERROR', 'DataType::kHALF', ...)."""
    if expr == "py::none()":
        return None
    if "::" in expr:
        return sim.default(expr)
    if expr.startswith('m.attr("'):
        return getattr(module, expr[len('m.attr("') : -2])
    obj: Any = module
    for part in expr.split("."):
        obj = getattr(obj, part)
    return obj


def _enums(sim: Sim, functions: dict[str, Function]) -> None:
    for qualname, spec in sim.spec.enums.items():
        extra: dict[str, Any] = {}
        if "__str__" in spec.methods:  # ErrorCode: onnx2trt::errorCodeStr, the code's name
            extra["__str__"] = extra["__repr__"] = lambda self: self.name
        if "itemsize" in spec.added:  # DataType.itemsize = property(lambda this: _itemsize(this))
            extra["itemsize"] = property(lambda this: functions["_itemsize"](sim, trt_type=this))
        sim.enums[qualname] = make_enum(spec, extra)


def _module_function(sim: Sim, name: str, overloads: tuple[OverloadSpec, ...], impl: Function | None) -> Function:
    def function(*args: Any, **kwargs: Any) -> Any:
        _spec, bound = bind(name, overloads, args, kwargs, sim.default)
        if impl is None:
            raise sim.unsupported(f"tensorrt.{name}")
        try:
            return _call(lambda **kw: impl(sim, **kw), bound)
        except ArgTypeError:
            raise incompatible(name, overloads, args, kwargs) from None

    function.__name__ = name
    return function


def build_tensorrt(sim: Sim, states: dict[str, type[State]], functions: dict[str, Function]) -> types.ModuleType:
    """The `tensorrt` module object for `sim`'s version."""
    module = types.ModuleType("tensorrt", f"Simulated TensorRT {sim.version} (ghost_deploy.testing.trtsim)")
    module.__version__ = python_version(sim.version, sim.spec.key)  # type: ignore[attr-defined]
    _enums(sim, functions)
    for name in _ordered(sim.spec.classes):
        sim.classes[name] = _make_class(sim, sim.spec.classes[name], states.get(name))
        setattr(module, name, sim.classes[name])
    for qualname, cls in sim.enums.items():
        scope = sim.spec.enums[qualname].scope
        setattr(sim.classes[scope] if scope else module, cls.__name__, cls)
    for name, spec in sim.spec.classes.items():
        for attr, expr in list(spec.attributes.items()) + [
            (k, v) for k, (kind, v) in spec.added.items() if kind == "attribute"
        ]:
            setattr(sim.classes[name], attr, _resolve(sim, module, expr))
    for name, overloads in sim.spec.functions.items():
        setattr(module, name, _module_function(sim, name, overloads, functions.get(name)))
    for name, expr in sim.spec.attributes.items():
        if name == "__version__":
            continue
        value = os.path.dirname(os.path.abspath(__file__)) if name == "CURDIR" else _resolve(sim, module, expr)
        setattr(module, name, value)
    sim.module = module
    return module
