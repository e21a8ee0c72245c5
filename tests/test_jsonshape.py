"""The one reader of ghost-deploy's JSON reports: nesting measured before parsing, typed fields, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.jsonshape import MAX_JSON_DEPTH, Field, nesting_ok, read_json_file, read_object


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[]", True),
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, True),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), False),
        (json.dumps({"a": ["[[[[", '\\"[', "\\", {"b": "}}}"}]}), True),  # brackets in strings do not count
        (json.dumps(["[" * 100]), True),
        ("[1, 2", False),  # brackets that do not match
        ("][", False),
        ("1", True),
    ],
)
def test_nesting_is_measured_outside_strings(text: str, ok: bool) -> None:
    assert nesting_ok(text.encode()) is ok


def test_a_file_nested_50000_deep_is_one_input_error_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(InputError, match=r"deep\.json is not JSON nested at most 64 levels"):
        read_json_file(path)


def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        read_json_file(fifo)


def test_non_finite_numbers_and_bad_utf8_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    for data, said in ((b'{"a": NaN}', "not strict JSON"), (b'{"a": 1e999}', "too large"), (b'{"\xff": 1}', "UTF-8")):
        path.write_bytes(data)
        with pytest.raises(InputError, match=said):
            read_json_file(path)


def test_fields_name_the_file_and_the_key_path(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx.json"
    path.write_text(json.dumps({"io": {"inputs": [{"shape": "abc", "n": 4}]}, "t": True, "big": 10**30}))
    root = read_object(path, "report", "export it again")
    with pytest.raises(InputError) as err:
        root["io"]["inputs"][0]["shape"].integers(-1, 100, 8)
    assert str(err.value) == (
        f"report {path}: io.inputs[0].shape must be a list of at most 8 integers, got 'abc'; export it again"
    )
    assert root["io"]["inputs"][0]["n"].integer(1, 8) == 4
    assert root["io"]["outputs"].missing and root["io"]["outputs"][0]["x"].text_or_none() is None
    with pytest.raises(InputError, match="t must be an integer from 0 to 1, got true"):
        root["t"].integer(0, 1)  # a boolean is no number
    with pytest.raises(InputError, match="big must be a finite number from 0 to 1, got a 31-digit number"):
        root["big"].number(0, 1)
    with pytest.raises(InputError, match=r"io\.inputs must be an object, got a list of 1"):
        root["io"]["inputs"]["name"].text()


def test_a_field_cannot_be_iterated_endlessly() -> None:
    with pytest.raises(TypeError, match="items"):
        list(Field([1, 2], "report x"))
    assert [f.integer(0, 9) for f in Field([1, 2], "report x").items()] == [1, 2]
