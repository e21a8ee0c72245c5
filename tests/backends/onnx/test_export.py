"""Export: named I/O, fixed and dynamic batch, determinism, opset bounds, identity Slice removal, parity."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnx.simplify import op_counts, remove_identity_slices, simplify_onnx
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import BatchSpec, parse_dynamic_batch
from ghost_deploy.errors import InputError
from tests.helpers import digit_images


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeRunner(model.SerializeToString()) as runner:
        return runner.infer({"input": x})["logits"]


@pytest.mark.slow
def test_dynamic_batch_runs_any_batch_size(small_model: torch.nn.Module) -> None:
    model, _ = simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(None, (1, 4, 8))))
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    x = digit_images(5, 64)
    for n in (1, 3, 5):
        with torch.no_grad():
            ref = small_model(torch.from_numpy(x[:n])).numpy()
        assert np.abs(_run(model, x[:n]) - ref).max() < 1e-4


@pytest.mark.slow
def test_fixed_batch_is_static(small_model: torch.nn.Module) -> None:
    model = onnx_from_module(small_model, 64, BatchSpec(4))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 3, 64, 64]
    assert [o.name for o in model.graph.output] == ["logits"]


@pytest.mark.slow
def test_simplified_graph_has_no_slice_and_same_outputs(small_model: torch.nn.Module) -> None:
    exported = onnx_from_module(small_model, 64, BatchSpec(2))
    assert op_counts(exported)["Slice"] == 32
    simplified, removed = simplify_onnx(exported)
    assert removed == 32 and "Slice" not in op_counts(simplified)
    x = digit_images(2, 64)
    assert np.abs(_run(simplified, x) - _run(exported, x)).max() < 1e-5


def test_a_real_slice_is_kept() -> None:
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(v, np.int64), n)
        for n, v in (("s", [0]), ("e", [2]), ("a", [1]), ("e_all", [2**62]))
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["x", "s", "e", "a"], ["y"]),  # keeps 2 of 4 channels: not an identity
            helper.make_node("Slice", ["y", "s", "e_all", "a"], ["z"]),
        ],  # full range: an identity
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 2, 2])],
        inits,
    )
    model, removed = remove_identity_slices(helper.make_model(graph))
    assert removed == 0  # the identity one feeds a graph output, so it stays; the partial one must stay too
    graph.output[0].name = "w"
    graph.node.append(helper.make_node("Relu", ["z"], ["w"]))
    model, removed = remove_identity_slices(helper.make_model(graph))
    assert removed == 1 and [n.op_type for n in model.graph.node] == ["Slice", "Relu"]


_EXPORT_SCRIPT = """
import hashlib, sys, torch
from ghost_deploy.model.ghostnet import GhostNet
from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.config import BatchSpec
from ghost_deploy.backends.onnx.simplify import simplify_onnx
torch.manual_seed(0)
m = GhostNet(10, 0.5).eval()
model, _ = simplify_onnx(onnx_from_module(m, 64, BatchSpec(None, (1, 2, 4))))
print(hashlib.sha256(model.SerializeToString()).hexdigest())
"""


@pytest.mark.slow
def test_export_is_byte_identical_across_processes() -> None:
    digests = {
        subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
        for _ in range(2)
    }
    assert len(digests) == 1


@pytest.mark.slow
def test_export_is_byte_identical_in_process(small_model: torch.nn.Module) -> None:
    a = onnx_from_module(small_model, 64, BatchSpec(1)).SerializeToString()
    b = onnx_from_module(small_model, 64, BatchSpec(1)).SerializeToString()
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()


@pytest.mark.parametrize("opset", [12, 99])
def test_opset_out_of_range(small_model: torch.nn.Module, opset: int) -> None:
    with pytest.raises(InputError, match="--opset"):
        onnx_from_module(small_model, 64, BatchSpec(1), opset=opset)


@pytest.mark.slow
def test_opset_13_works(small_model: torch.nn.Module) -> None:
    model = onnx_from_module(small_model, 64, BatchSpec(1), opset=13)
    assert model.opset_import[0].version == 13


@pytest.mark.parametrize("text", ["1:8", "8:4:16", "0:1:2", "a:b:c"])
def test_bad_dynamic_batch(text: str) -> None:
    with pytest.raises(InputError, match="dynamic-batch"):
        parse_dynamic_batch(text)


@pytest.mark.slow
def test_ghostnet_100_at_224_matches_pytorch_on_real_images(tmp_path: Path) -> None:
    from ghost_deploy.model.synthetic import realistic_ghostnet

    images = digit_images(24, 224)
    model = realistic_ghostnet(images[:16], width=1.0, num_classes=1000, seed=0)
    onnx_model, _ = simplify_onnx(onnx_from_module(model, 224, BatchSpec(None, (1, 4, 8))))
    assert "Slice" not in op_counts(onnx_model)
    with torch.no_grad():
        ref = model(torch.from_numpy(images[16:])).numpy()
    assert np.ptp(ref, axis=1).mean() > 5.0, "logits must span several units for 1e-4 to mean something"
    assert np.abs(_run(onnx_model, images[16:]) - ref).max() <= 1e-4
