"""pybind11's argument rules for the simulated surface: overloads tried in order, names as bound.

An argument bound without `py::arg` is `argN` and can only be passed by position; a named one can be passed
either way; a keyword that no overload names, too many or too few arguments: TypeError, worded as pybind11's
"incompatible function arguments".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ghost_deploy.testing.trtsim.apispec import ArgSpec, OverloadSpec

UNRESOLVED = "*args"  # the key under which an overload without a known argument list receives everything


class ArgTypeError(Exception):
    """Raised by an implementation when an argument has a type that no overload accepts."""


def _signature(args: tuple[ArgSpec, ...] | None) -> str:
    if args is None:
        return "(*args, **kwargs)"
    parts = [a.name + ("" if a.default is None else f" = {a.default}") for a in args]
    return "(" + ", ".join(parts) + ")"


def incompatible(
    qualname: str, overloads: tuple[OverloadSpec, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TypeError:
    """The TypeError pybind11 raises when no overload accepts the call."""
    lines = [f"{qualname}(): incompatible function arguments. The following argument types are supported:"]
    lines += [f"    {i}. {_signature(ov.args)}" for i, ov in enumerate(overloads, 1)]
    invoked = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    lines += ["", "Invoked with: " + ", ".join(invoked)]
    return TypeError("\n".join(lines))


def _try(
    spec: tuple[ArgSpec, ...], args: tuple[Any, ...], kwargs: dict[str, Any], default: Callable[[str], Any]
) -> dict[str, Any] | None:
    if len(args) > len(spec):
        return None
    bound = {a.name: v for a, v in zip(spec, args, strict=False)}
    by_name = {a.name: a for a in spec}
    for key, value in kwargs.items():
        arg = by_name.get(key)
        if arg is None or arg.positional_only or key in bound:
            return None
        bound[key] = value
    for arg in spec:
        if arg.name not in bound:
            if arg.default is None:
                return None
            bound[arg.name] = default(arg.default)
    return bound


def bind(
    qualname: str,
    overloads: tuple[OverloadSpec, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    default: Callable[[str], Any],
) -> tuple[OverloadSpec, dict[str, Any]]:
    """The first overload that accepts the call and its arguments by name (defaults resolved by `default`)."""
    for ov in overloads:
        if ov.args is None:
            return ov, {UNRESOLVED: (args, kwargs)}
        bound = _try(ov.args, args, kwargs, default)
        if bound is not None:
            return ov, bound
    raise incompatible(qualname, overloads, args, kwargs)
