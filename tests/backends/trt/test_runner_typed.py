"""Defect 12: the runner kept its state in `dict[str, Any]`, so mypy checked none of its TensorRT calls. Now it is
typed against tensorrt-stubs: a misspelt TensorRT method in the runner is a type error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[3] / "ghost_deploy" / "backends" / "trt" / "runner.py"


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_bindings") is None, reason="needs tensorrt-stubs (pip install --no-deps ...)"
)
def test_mypy_catches_a_misspelt_tensorrt_call_in_the_runner(tmp_path: Path) -> None:
    from mypy import api

    source = RUNNER.read_text()
    call = "slot.context.set_tensor_address("
    assert call in source
    copy = tmp_path / "runner_copy.py"
    copy.write_text(source.replace(call, "slot.context.set_tensor_adress("))
    cache = RUNNER.parents[3] / ".mypy_cache"  # warm where CI ran mypy first
    args = [str(copy), "--strict", "--ignore-missing-imports", "--follow-imports=silent", "--cache-dir", str(cache)]
    out, _err, status = api.run(args)
    assert status == 1 and '"IExecutionContext" has no attribute "set_tensor_adress"' in out, out
