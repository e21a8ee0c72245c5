"""GhostNetV2 and V3: key layouts of the official code and timm, re-parameterisation, inference, export."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ghost_deploy.config import BatchSpec, ExportConfig, Overrides, PrecisionConfig
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import CheckpointError, InputError, VerificationFailed
from ghost_deploy.model.checkpoint import load_model, save_checkpoint
from ghost_deploy.model.ghostnet import GhostNet
from ghost_deploy.model.ghostnet_v3 import has_training_branches, reparameterize
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.model.synthetic import realistic_ghostnet
from ghost_deploy.model.variants import check_input_size
from ghost_deploy.stages.export_onnx import export_model
from tests.helpers import DIGITS, FIXTURES, digit_images

DATA = FIXTURES


def _layout(name: str) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (DATA / f"{name}_state_dict.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split()
        layout[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return layout


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """60 test digits of every class (BatchNorm statistics from one or two classes give logits in the hundreds)."""
    return torch.from_numpy(digit_images(359, 64)[::6])


@pytest.fixture(scope="module")
def v2_model(images: torch.Tensor) -> GhostNet:
    return realistic_ghostnet(images.numpy(), width=0.5, num_classes=10, seed=2, version="v2")


@pytest.fixture(scope="module")
def v3_model(images: torch.Tensor) -> GhostNet:
    return realistic_ghostnet(images.numpy(), width=0.5, num_classes=10, seed=3, version="v3")


@pytest.mark.parametrize(
    ("version", "fused", "references"),
    [
        ("v2", False, ["ghostnetv2_100_official", "ghostnetv2_100_timm"]),
        ("v3", False, ["ghostnetv3_100_timm"]),
        ("v3", True, ["ghostnetv3_100_official_fused", "ghostnetv3_100_timm_fused"]),
    ],
)
def test_keys_and_shapes_are_those_of_the_official_code_and_timm(
    version: str, fused: bool, references: list[str]
) -> None:
    ours = _shapes(GhostNet(1000, 1.0, version=version, fused=fused))
    for name in references:
        assert ours == _layout(name), name


@pytest.mark.slow
def test_official_v3_branch_names_differ_from_timm_only_by_bn_and_load(tmp_path: Path, v3_model: GhostNet) -> None:
    def official_name(key: str) -> str:
        return key.replace(".bn1.", ".bn.") if "_rpr_" in key else key

    timm_keys = _shapes(GhostNet(1000, 1.0, version="v3"))
    assert {official_name(k): v for k, v in timm_keys.items()} == _layout("ghostnetv3_100_official")
    path = tmp_path / "official_v3.pth"
    torch.save({"state_dict": {official_name(k): v for k, v in v3_model.state_dict().items()}}, path)
    loaded = load_model(path)
    assert loaded.info.arch == "ghostnetv3_050" and "bn -> bn1" in loaded.checkpoint_form
    x = torch.from_numpy(digit_images(4, 64))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), v3_model(x))


@pytest.mark.parametrize(
    ("version", "width", "params"),
    [("v2", 1.0, 6.16e6), ("v2", 1.3, 8.96e6), ("v2", 1.6, 12.39e6), ("v3", 1.0, 8.13e6)],
)
def test_published_parameter_counts(version: str, width: float, params: float) -> None:
    count = sum(p.numel() for p in GhostNet(1000, width, version=version).parameters())
    assert abs(count - params) / params < 0.005


@pytest.mark.parametrize(("version", "fused"), [("v1", False), ("v2", False), ("v3", False), ("v3", True)])
def test_batch_1_keeps_its_batch_dimension(version: str, fused: bool) -> None:
    out = GhostNet(7, 0.5, version=version, fused=fused).eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 7)  # the official V3 forward's squeeze() would give (7,)


@pytest.mark.slow
def test_reparameterize_returns_a_fused_copy_with_the_same_logits(v3_model: GhostNet, images: torch.Tensor) -> None:
    before = copy.deepcopy(v3_model.state_dict())
    fused = reparameterize(v3_model)
    assert fused is not v3_model and has_training_branches(v3_model) and not has_training_branches(fused)
    assert all(torch.equal(v, before[k]) for k, v in v3_model.state_dict().items())  # the original is untouched
    keys = set(fused.state_dict())
    assert not any("_rpr_" in k for k in keys) and "blocks.1.0.conv_dw.bias" in keys
    assert keys == set(GhostNet(10, 0.5, version="v3", fused=True).state_dict())
    assert sum(p.numel() for p in fused.parameters()) < 0.8 * sum(p.numel() for p in v3_model.parameters())
    with torch.no_grad():
        exact = copy.deepcopy(v3_model).double()
        err64 = (exact(images.double()) - reparameterize(exact)(images.double())).abs().max()
        unfused, merged = v3_model(images), fused(images)
    assert float(err64) < 1e-9  # the fusion itself is exact: every branch kind (3 convs, 1x1 scale, BN skip)
    assert float((unfused - merged).abs().max()) <= 1e-4 + 1e-5 * float(unfused.abs().max())
    assert reparameterize(exact, inplace=True) is exact


@pytest.mark.parametrize(
    ("version", "fused", "arch"),
    [("v2", False, "ghostnetv2_050"), ("v3", False, "ghostnetv3_050"), ("v3", True, "ghostnetv3_050")],
)
def test_architecture_is_inferred_from_the_keys(tmp_path: Path, version: str, fused: bool, arch: str) -> None:
    model = GhostNet(10, 0.5, version=version, fused=fused).eval()
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model(path)
    assert (loaded.info.arch, loaded.info.width, loaded.info.source) == (arch, 0.5, "inferred")
    assert has_training_branches(loaded.module) == (version == "v3" and not fused)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))


def test_an_arch_flag_of_another_family_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v2.pth"
    torch.save(GhostNet(10, 1.0, version="v2").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"GhostNetV2 .*--arch says ghostnet_100.*ghostnetv2_\*"):
        load_model(path, Overrides(arch="ghostnet_100"))


def test_inputs_whose_last_maps_would_be_under_2_px_are_refused(tmp_path: Path) -> None:
    check_input_size(32, "v1")
    with pytest.raises(InputError, match=r"too small for GhostNetV2: its last feature maps would be 1 px.*use 64"):
        check_input_size(32, "v2")
    path = tmp_path / "v3.pth"
    torch.save(GhostNet(10, 0.5, version="v3").state_dict(), path)
    with pytest.raises(InputError, match="too small for GhostNetV3"):
        load_model(path, Overrides(input_size=32))


def _checkpoint(tmp_path: Path, model: GhostNet, arch: str) -> Path:
    pre = Preprocessing(resize=64, crop=64)  # as `digit_images`, which the BatchNorm statistics came from
    data = {split: str(DIGITS / split) for split in ("calibration", "test")}
    info = ModelInfo(arch, 0.5, 10, 64, pre, labels=tuple("0123456789"), data=data)
    path = tmp_path / f"{arch}.pt"
    save_checkpoint(path, model, info)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_ghost_export_matches_pytorch_with_a_dynamic_batch_and_constant_resize_sizes(
    tmp_path: Path, version: str, v2_model: GhostNet, v3_model: GhostNet
) -> None:
    model = v2_model if version == "v2" else v3_model
    path = _checkpoint(tmp_path, model, f"ghostnet{version}_050")
    cfg = ExportConfig(batch=BatchSpec(None, (1, 4, 8)), eval_limit=64, output=tmp_path / "m.onnx")
    result = export_model(path, cfg)
    report = result.report
    metrics = report["verification"]["metrics"]
    assert report["verification"]["passed"] and metrics["samples"] == 64
    assert ("reparameterization" in report) == (version == "v3")
    if version == "v3":
        assert report["reparameterization"]["passed"] and report["reparameterization"]["max_abs_error_float64"] < 1e-9
    graph = onnx.load(str(result.artifact))
    ops = {n.op_type for n in graph.graph.node}
    assert {"Resize", "Sigmoid", "AveragePool"} <= ops and "Shape" not in ops  # static sizes at 64 px
    session = ort.InferenceSession(str(result.artifact), providers=["CPUExecutionProvider"])
    x = digit_images(3, 64).astype(np.float32)
    for batch in (x[:1], x):
        logits = session.run(None, {"input": batch})[0]
        assert logits.shape == (len(batch), 10)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        assert np.abs(logits - expected).max() <= 1e-4 + 1e-5 * np.abs(expected).max()


@pytest.mark.slow
@pytest.mark.parametrize(("version", "target"), [("v2", "onnx-int8"), ("v3", "ort-int8"), ("v3", "onnx-fp16")])
def test_precision_targets_and_their_preview_work_on_v2_and_v3(
    tmp_path: Path, version: str, target: str, v2_model: GhostNet, v3_model: GhostNet
) -> None:
    model = v2_model if version == "v2" else v3_model
    path = _checkpoint(tmp_path, model, f"ghostnet{version}_050")
    cfg = ExportConfig(
        target=target,
        eval_limit=24,
        calib_size=16,
        output=tmp_path / "m.onnx",
        precision=PrecisionConfig(calib_method="minmax"),
    )
    try:
        result = export_model(path, cfg)
    except VerificationFailed as exc:  # random weights may miss a gate; the failed artifact and report exist
        result = exc.result  # type: ignore[assignment]
    preview = result.report["precision_verification"]["metrics"]
    assert preview["samples"] == 24 and preview["cosine_mean"] > 0.5  # random weights: related, not accurate
    ops = {n.op_type for n in onnx.load(str(result.artifact)).graph.node}
    if target.endswith("int8"):
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    else:
        assert "Cast" in ops


@pytest.mark.slow
def test_a_v3_whose_fusion_changes_the_logits_exits_4_and_writes_nothing(tmp_path: Path, v3_model: GhostNet) -> None:
    broken = copy.deepcopy(v3_model)
    bn = broken.blocks[3][0].ghost1.cheap_rpr_skip
    bn.running_var.fill_(float("nan"))  # a corrupt checkpoint: NaN statistics in one branch
    path = _checkpoint(tmp_path, broken, "ghostnetv3_050")
    with pytest.raises(CheckpointError, match="non-finite weights"):  # refused at load by default (exit 2)
        export_model(path, ExportConfig(eval_limit=8, output=tmp_path / "m.onnx"))
    cfg = ExportConfig(eval_limit=8, output=tmp_path / "m.onnx", allow_nonfinite_weights=True)
    with pytest.raises(VerificationFailed, match=r"re-parameterisation changed the logits.*nothing was exported"):
        export_model(path, cfg)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.json").exists()
