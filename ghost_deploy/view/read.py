"""Reading report dictionaries without trusting them: a field of the wrong type reads as None or empty.

Reports are files a user can edit: a number that is not a finite number, a list that is not a list, becomes
None or empty, and the page then says "not measured". Strings are kept as they are; the renderer escapes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Scalar = float | int | str | bool | None
Pairs = tuple[tuple[str, Scalar], ...]


def num(value: object) -> float | None:
    """A finite number as float, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def text(value: object) -> str | None:
    """A string, else None."""
    return value if isinstance(value, str) else None


def obj(value: object) -> dict[str, Any]:
    """A JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def seq(value: object) -> list[Any]:
    """A JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def numbers(value: object) -> tuple[float, ...]:
    """The finite numbers of a JSON array (anything else in it is dropped)."""
    return tuple(v for v in (num(x) for x in seq(value)) if v is not None)


def scalars(data: Mapping[str, Any]) -> Pairs:
    """The scalar entries of an object, in order (nested objects and arrays are left out)."""
    return tuple((str(k), v) for k, v in data.items() if v is None or isinstance(v, (str, int, float, bool)))
