"""The JSON files ghost-deploy reads back (artifact and profile reports), read with bounds and typed accessors.

A report is a file anyone can edit, so nothing in it is trusted. It is read through the bounded regular-file
reader (no FIFO, no device, at most `MAX_JSON_BYTES`), its nesting is measured on the bytes before the parser
recurses (50,000 nested brackets would otherwise be a RecursionError, and a few hundred would still reach the
recursive code that copies a report into a manifest), and it is parsed as strict JSON. Then every field a step
relies on is taken through a `Field`, which checks its type and range and, when it is wrong, raises one
InputError naming the file and the key path:

    report m.onnx.json: io.inputs[0].shape must be a list of integers, got 'abc'; export the artifact again

A field that is absent or null is "missing": the `*_or_none` accessors return None for it, the others refuse it.
Readers that must never fail on a field (the report page shows "not measured") keep using `view.read` on the
parsed data; they still read the file here.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import loads_strict, read_bytes_limited

MAX_JSON_BYTES = 64 << 20  # a report or profile of ghost-deploy's is at most a few MB (per-query times)
MAX_JSON_DEPTH = 64  # ghost-deploy's own reports nest fewer than 10 levels

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1
_CHUNK = 1 << 22
_MISSING: Any = object()


def nesting_ok(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the brackets of a JSON text (outside its strings) nest at most `limit` deep and match up.

    Measured without recursion, as the running sum of +1 per opening and -1 per closing bracket, in chunks
    (a 64 MiB file of brackets takes about a second). Brackets that do not match are refused here too,
    which the parser would do anyway.
    """
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # then no quote inside a string is escaped
    outside = b"".join(unescaped.split(b'"')[::2])  # the text between strings
    brackets = np.frombuffer(outside.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    steps = _STEP[brackets]
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        running = np.cumsum(steps[start : start + _CHUNK], dtype=np.int64) + depth
        if running.max() > limit or running.min() < 0:
            return False
        depth = int(running[-1])
    return depth == 0


def read_json_file(path: Path, what: str = "report", limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of a regular file of at most `limit` bytes, nested at most MAX_JSON_DEPTH deep.

    Every failure (missing, special file, too large, not UTF-8, not strict JSON, too deep) is one InputError
    naming `what` and the file."""
    data = read_bytes_limited(path, limit, what)
    if not nesting_ok(data):
        raise InputError(
            f"{what} {path} is not JSON nested at most {MAX_JSON_DEPTH} levels deep (its brackets nest deeper "
            "or do not match); this is not a file ghost-deploy wrote"
        )
    try:
        return loads_strict(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{what} {path} is not strict JSON: {str(exc)[:160]}") from None


def read_object(path: Path, what: str = "report", fix: str = "") -> Field:
    """A JSON object read by `read_json_file`, as the root `Field`; InputError when it is not an object.

    `fix` is what to do when a field is wrong (e.g. "export the artifact again"), added to every message."""
    data = read_json_file(path, what)
    root = Field(data, f"{what} {path}", "", fix)
    root.obj()
    return root


def show(value: Any) -> str:
    """A short, one-line description of a JSON value for an error message."""
    if value is _MISSING or value is None:
        return "null" if value is None else "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10**100 else 101
        return str(value) if digits <= 20 else f"a {digits if digits <= 100 else 'more than 100'}-digit number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _span(low: float, high: float) -> str:
    """' from LOW to HIGH', ' of at least LOW', ' of at most HIGH' or nothing, for a message."""
    if math.isfinite(low) and math.isfinite(high):
        return f" from {low:g} to {high:g}"
    if math.isfinite(low):
        return f" of at least {low:g}"
    return f" of at most {high:g}" if math.isfinite(high) else ""


def control_character(text: str) -> str | None:
    """The first control or line-separator character of `text`, as U+XXXX, or None when it has none.

    Such a character cannot be in a label: labels are written one per line, and a terminal obeys them."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(ch):04X}"
    return None


class Field:
    """One value of a JSON document, with where it is (`origin`: "report FILE", `where`: "io.inputs[0]").

    Indexing gives a child Field (a missing key is a missing Field, never a KeyError); the accessors return the
    value typed, or raise InputError naming the file, the key path, what was expected and what was found.
    """

    __slots__ = ("fix", "origin", "value", "where")

    def __init__(self, value: Any, origin: str, where: str = "", fix: str = "") -> None:
        self.value, self.origin, self.where, self.fix = value, origin, where, fix

    def __getitem__(self, key: str | int) -> Field:
        if isinstance(key, int):
            where = f"{self.where}[{key}]"
            items = self.value if isinstance(self.value, list) else []
            if not self.missing and not isinstance(self.value, list):
                self.fail("a list")
            return Field(items[key] if -len(items) <= key < len(items) else _MISSING, self.origin, where, self.fix)
        where = f"{self.where}.{key}" if self.where else key
        if not self.missing and not isinstance(self.value, dict):
            self.fail("an object")
        value = self.value.get(key, _MISSING) if isinstance(self.value, dict) else _MISSING
        return Field(value, self.origin, where, self.fix)

    @property
    def missing(self) -> bool:
        """Absent or null."""
        return self.value is _MISSING or self.value is None

    def fail(self, expected: str) -> NoReturn:
        """Raise the InputError saying this field must be `expected`."""
        where = self.where or "the top level"
        fix = f"; {self.fix}" if self.fix else ""
        raise InputError(f"{self.origin}: {where} must be {expected}, got {show(self.value)}{fix}")

    def obj(self) -> dict[str, Any]:
        """A JSON object (as parsed: its contents are not checked)."""
        if not isinstance(self.value, dict):
            self.fail("an object")
        return dict(self.value)

    def obj_or_none(self) -> dict[str, Any] | None:
        """A JSON object, or None when missing."""
        return None if self.missing else self.obj()

    def items(self, max_items: int = 1 << 16) -> list[Field]:
        """The elements of a JSON array of at most `max_items`, as Fields."""
        if not isinstance(self.value, list) or len(self.value) > max_items:
            self.fail(f"a list of at most {max_items} items")
        return [self[i] for i in range(len(self.value))]

    def items_or_none(self, max_items: int = 1 << 16) -> list[Field] | None:
        """The elements of a JSON array, or None when missing."""
        return None if self.missing else self.items(max_items)

    def text(self, max_len: int = 4096, line: bool = False) -> str:
        """A string of at most `max_len` characters; with `line`, without control characters (one line)."""
        if not isinstance(self.value, str) or len(self.value) > max_len:
            self.fail(f"a string of at most {max_len} characters")
        bad = control_character(self.value) if line else None
        if bad is not None:
            self.fail(f"one line of text without control characters (it has {bad})")
        return str(self.value)

    def text_or_none(self, max_len: int = 4096, line: bool = False) -> str | None:
        """A string, or None when missing."""
        return None if self.missing else self.text(max_len, line)

    def integer(self, low: int, high: int) -> int:
        """An integer (not a boolean, not 3.0) with low <= value <= high."""
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"an integer from {low} to {high}")
        return int(value)

    def integer_or_none(self, low: int, high: int) -> int | None:
        """An integer in range, or None when missing."""
        return None if self.missing else self.integer(low, high)

    def number(self, low: float = -math.inf, high: float = math.inf) -> float:
        """A finite number (an integer counts, a boolean does not) with low <= value <= high."""
        value = self.value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not low <= value <= high:
            self.fail("a finite number" + _span(low, high))
        return float(value)

    def number_or_none(self, low: float = -math.inf, high: float = math.inf) -> float | None:
        """A finite number in range, or None when missing."""
        return None if self.missing else self.number(low, high)

    def flag(self) -> bool:
        """true or false."""
        if not isinstance(self.value, bool):
            self.fail("true or false")
        return bool(self.value)

    def flag_or_none(self) -> bool | None:
        """true, false, or None when missing."""
        return None if self.missing else self.flag()

    def texts(self, max_items: int = 1 << 16, max_len: int = 4096, line: bool = False) -> list[str]:
        """A list of strings (see `text`)."""
        return [item.text(max_len, line) for item in self.items(max_items)]

    def texts_or_none(self, max_items: int = 1 << 16, max_len: int = 4096, line: bool = False) -> list[str] | None:
        """A list of strings, or None when missing."""
        return None if self.missing else self.texts(max_items, max_len, line)

    def integers(self, low: int, high: int, max_items: int = 1 << 16) -> list[int]:
        """A list of at most `max_items` integers in range."""
        value = self.value
        if not isinstance(value, list) or len(value) > max_items:
            self.fail(f"a list of at most {max_items} integers")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            self.fail("a list of integers")
        return [item.integer(low, high) for item in self.items(max_items)]

    def numbers(self, count: int, low: float = -math.inf, high: float = math.inf) -> list[float]:
        """A list of exactly `count` finite numbers in range."""
        if not isinstance(self.value, list) or len(self.value) != count:
            self.fail(f"a list of {count} numbers")
        return [item.number(low, high) for item in self.items(count)]

    def __iter__(self) -> Iterator[Field]:
        """Refused: indexing never ends (a missing item is a missing Field); iterate over `items()`."""
        raise TypeError("iterate over field.items(), which checks that the value is a list")
