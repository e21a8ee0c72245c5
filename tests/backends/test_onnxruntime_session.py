"""Every ONNX Runtime session is made by `new_session`, from bytes: a file name that is not UTF-8 runs (ONNX
Runtime raised a TypeError on it: exit 1), and a session that cannot be built is exit 2 in one line naming the
file (was ONNX Runtime's own exception, exit 1, its message several lines for some failures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.errors import InputError
from tests.backends.onnx.test_guard import _graph, _model
from tests.helpers import REPO

NOT_UTF8 = b"m\xff\xfe.onnx"


def _not_utf8(folder: Path) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), NOT_UTF8)))
    onnx.save(_model(_graph()), str(path))
    assert os.fsencode(path).endswith(NOT_UTF8)
    return path


def _no_implementation(path: Path) -> Path:
    """Valid ONNX the guard takes, whose HardSigmoid on doubles ONNX Runtime's CPU provider does not implement."""
    nodes = [
        helper.make_node("Cast", ["relu_out"], ["d"], name="cast", to=TensorProto.DOUBLE),
        helper.make_node("HardSigmoid", ["d"], ["hs"], name="hs"),
    ]
    out = helper.make_tensor_value_info("hs", TensorProto.DOUBLE, [1, 8, 32, 32])
    onnx.save(_model(_graph(nodes, [out])), str(path))
    return path


def test_a_file_whose_name_is_not_utf8_runs(tmp_path: Path) -> None:
    with OnnxRuntimeRunner(_not_utf8(tmp_path)) as runner:
        out = runner.infer({"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert out["logits"].shape == (1, 10)


def test_a_session_that_cannot_be_built_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = _no_implementation(tmp_path / "noimpl.onnx")
    with pytest.raises(InputError) as refused:
        OnnxRuntimeRunner(path).activate()
    text = str(refused.value)
    assert text.startswith(f"ONNX Runtime cannot load {path}: ") and "HardSigmoid" in text and "\n" not in text


def _cli(*args: str | bytes, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ghost_deploy", *args], capture_output=True, text=True, env=env,
                          errors="replace", cwd=cwd, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_export_verify_and_profile_take_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    path = _not_utf8(tmp_path)
    name = os.fsencode(path.name)
    runs = {
        "export": _cli("export", name, "-o", "out.onnx", "--eval-limit", "4", cwd=tmp_path),
        "verify": _cli("verify", name, "--reference", name, "--eval-limit", "4", cwd=tmp_path),
        "profile": _cli("profile", name, "--duration-s", "0.1", "--warmup-ms", "0", cwd=tmp_path),
    }
    for command, proc in runs.items():
        assert proc.returncode == 0, (command, proc.stderr[-800:])
    assert (tmp_path / "out.onnx").is_file()


@pytest.mark.slow
def test_verify_and_profile_of_a_model_onnx_runtime_cannot_load_are_exit_2(tmp_path: Path) -> None:
    path = _no_implementation(tmp_path / "noimpl.onnx")
    good = tmp_path / "good.onnx"
    onnx.save(_model(_graph()), str(good))
    runs = {
        "verify": _cli("verify", str(path), "--reference", str(good), "--eval-limit", "4", cwd=REPO),
        "profile": _cli("profile", str(path), "--duration-s", "0.1", "--warmup-ms", "0", cwd=REPO),
    }
    for command, proc in runs.items():
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("ghost-deploy: error: ONNX Runtime cannot load"), (
            command,
            proc.stderr[-800:],
        )
        assert "noimpl.onnx" in last and "HardSigmoid" in last


def test_a_model_with_external_data_loads_and_runs_from_its_checked_bytes(tmp_path: Path) -> None:
    """The weights beside the file are read relative to it (not to the working directory) and inlined."""
    from onnx import numpy_helper

    from ghost_deploy.backends.onnx.files import load_onnx

    model = _model(_graph())
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))  # as raw bytes
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    assert load_onnx(path).graph.initializer[0].raw_data
    with OnnxRuntimeRunner(path) as runner:
        assert runner.infer({"input": np.zeros((1, 3, 32, 32), np.float32)})["logits"].shape == (1, 10)
