"""One TensorRT version's Python API, read from `api/trt-api-<V>.json` (NVIDIA's pybind11 sources, see README),
with each enum value's C++ integer from `api/trt-enums-<V>.json` (the release's `include/NvInfer*.h`) and
the ONNX operators and opsets its parser takes from `api/trt-onnx-ops-<V>.json` (onnx-tensorrt's operators.md).

Only what the simulated surface needs is kept: classes with their bases, methods (overloads with argument
names and defaults), static methods, properties (access), attributes added by TensorRT's `__init__.py`,
enums (values in declaration order, with their C++ integers), module functions and attributes.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

API_KEYS = ("8.5", "8.6", "10.3", "10.13", "11.1")


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """One argument: `argN` names can only be passed by position (pybind11 without py::arg)."""

    name: str
    positional_only: bool
    default: str | None  # the C++ default expression, None when the argument is required


@dataclasses.dataclass(frozen=True)
class OverloadSpec:
    """One overload; `args` is None where the extractor could not recover the argument list."""

    args: tuple[ArgSpec, ...] | None
    deprecated: str | None


@dataclasses.dataclass(frozen=True)
class PropertySpec:
    """A property: readable and/or writable, possibly static (on the class) and deprecated."""

    name: str
    readable: bool
    writable: bool
    static: bool
    deprecated: str | None
    setter_deprecated: str | None


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """A bound class. `added` holds what TensorRT's `__init__.py` attaches: name -> (kind, expression)."""

    name: str
    bases: tuple[str, ...]
    methods: dict[str, tuple[OverloadSpec, ...]]
    static_methods: dict[str, tuple[OverloadSpec, ...]]
    properties: dict[str, PropertySpec]
    attributes: dict[str, str]
    added: dict[str, tuple[str, str]]
    overridable: tuple[str, ...]
    buffer_protocol: bool


@dataclasses.dataclass(frozen=True)
class EnumSpec:
    """A pybind11 enum; `qualname` is 'ILogger.Severity' for an enum scoped in a class."""

    qualname: str
    name: str
    scope: str | None
    values: tuple[tuple[str, str], ...]  # (Python name, C++ enumerator), in declaration order
    numbers: tuple[int, ...]  # the C++ integer of each value (trt-enums-<V>.json, from that release's headers)
    arithmetic: bool
    methods: dict[str, tuple[OverloadSpec, ...]]
    added: dict[str, tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class OnnxSupport:
    """What the version's ONNX parser takes (api/trt-onnx-ops-<V>.json, from onnx-tensorrt's operators.md)."""

    operators: frozenset[str]
    min_opset: int
    max_opset: int
    source: str
    int8_operators: frozenset[str]  # operators whose 'Supported Types' name INT8 (8.x pages; 8.6's for 10.x)


@dataclasses.dataclass(frozen=True)
class ApiSpec:
    """Everything `tensorrt` exposes on one version."""

    key: str
    python_version: str  # what `tensorrt.__version__` is on that version (module_attributes)
    header_version: str  # include/NvInferVersion.h, MAJOR.MINOR.PATCH.BUILD
    classes: dict[str, ClassSpec]
    enums: dict[str, EnumSpec]
    functions: dict[str, tuple[OverloadSpec, ...]]
    attributes: dict[str, str]
    onnx: OnnxSupport


def _deprecated(entry: dict[str, Any], key: str = "deprecated") -> str | None:
    value = entry.get(key)
    return None if value is None else str(value)


def _overloads(method: dict[str, Any]) -> tuple[OverloadSpec, ...]:
    out = []
    for ov in method["overloads"]:
        args = None
        if ov.get("args") is not None:
            args = tuple(
                ArgSpec(a["name"], bool(a.get("positional_only_unnamed")), a.get("default")) for a in ov["args"]
            )
        out.append(OverloadSpec(args, _deprecated(ov)))  # `deprecated`: wrapped by deprecateMember (warns)
    return tuple(out)


def _property(name: str, entry: dict[str, Any]) -> PropertySpec:
    access = entry["access"]
    return PropertySpec(
        name=name,
        readable=access in ("readonly", "readwrite"),
        writable=access in ("writeonly", "readwrite"),
        static=bool(entry.get("static")),
        # only an accessor wrapped by utils::deprecateMember warns when used; the rest is documentation
        deprecated=_deprecated(entry) if "deprecate" in str(entry.get("getter", "")) else None,
        setter_deprecated=_deprecated(entry, "setter_deprecated")
        if "deprecate" in str(entry.get("setter", ""))
        else None,
    )


def _added(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {k: (str(v["kind"]), str(v["value"])) for k, v in entry.get("python_added", {}).items()}


def _class(name: str, entry: dict[str, Any]) -> ClassSpec:
    return ClassSpec(
        name=name,
        bases=tuple(entry.get("bases", [])),
        methods={k: _overloads(v) for k, v in entry["methods"].items()},
        static_methods={k: _overloads(v) for k, v in entry["static_methods"].items()},
        properties={k: _property(k, v) for k, v in entry["properties"].items()},
        attributes={k: str(v["value"]) for k, v in entry.get("attributes", {}).items()},
        added=_added(entry),
        overridable=tuple(entry.get("python_overridable") or ()),
        buffer_protocol="buffer_protocol" in entry.get("flags", []),
    )


def _enum(qualname: str, entry: dict[str, Any], numbers: dict[str, Any]) -> EnumSpec:
    # The API JSON lists values alphabetically and gives no numbers; `line` is the order of declaration,
    # which is the order pybind11 registered them (the first of two aliases is the one `.name` reports).
    # The numbers are C++'s, read from the release's own headers (tools/extract_trt_enums.py).
    ordered = sorted(entry["values"].items(), key=lambda kv: (kv[1].get("line", 0), kv[0]))
    table = numbers.get(qualname, {}).get("values", {})
    missing = [k for k, _v in ordered if k not in table]
    if missing:
        raise ValueError(f"trt-enums: no C++ value for {qualname}.{missing[0]}")
    return EnumSpec(
        qualname=qualname,
        name=str(entry["name"]),
        scope=entry.get("scope"),
        values=tuple((k, str(v["cpp"])) for k, v in ordered),
        numbers=tuple(int(table[k]["value"]) for k, _v in ordered),
        arithmetic=bool(entry.get("arithmetic")),
        methods={k: _overloads(v) for k, v in entry.get("methods", {}).items()},
        added=_added(entry),
    )


def load_api(key: str) -> ApiSpec:
    """Parse the shipped `trt-api-<key>.json` (key as in API_KEYS)."""
    if key not in API_KEYS:
        raise ValueError(f"no TensorRT API description for {key!r}; known: {', '.join(API_KEYS)}")
    folder = resources.files(__package__).joinpath("api")
    raw = json.loads(folder.joinpath(f"trt-api-{key}.json").read_text(encoding="utf-8"))
    numbers = json.loads(folder.joinpath(f"trt-enums-{key}.json").read_text(encoding="utf-8"))["enums"]
    ops = json.loads(folder.joinpath(f"trt-onnx-ops-{key}.json").read_text(encoding="utf-8"))
    return ApiSpec(
        key=key,
        python_version=str(raw["module_attributes"]["__version__"]["value"]),
        header_version=str(raw["version"]["full"]),
        classes={k: _class(k, v) for k, v in raw["classes"].items()},
        enums={k: _enum(k, v, numbers) for k, v in raw["enums"].items()},
        functions={k: _overloads(v) for k, v in raw["module_functions"].items()},
        attributes={k: str(v.get("value")) for k, v in raw["module_attributes"].items()},
        onnx=OnnxSupport(
            frozenset(ops["operators"]),
            int(ops["opset"]["min"]),
            int(ops["opset"]["max"]),
            str(ops["source"]),
            frozenset(ops["int8_operators"]),
        ),
    )
