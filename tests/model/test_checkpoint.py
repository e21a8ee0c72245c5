"""Checkpoint loading: every state_dict form, metadata, inference of width and classes, refusals."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from ghost_deploy.config import Overrides
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import CheckpointError, InputError
from ghost_deploy.model.checkpoint import infer_width, load_model, save_checkpoint
from ghost_deploy.model.ghostnet import GhostNet
from ghost_deploy.model.info import ModelInfo


@pytest.fixture(scope="module")
def net() -> GhostNet:
    torch.manual_seed(0)
    return GhostNet(num_classes=5, width=0.5).eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return bool(torch.equal(a(x), b(x)))


@pytest.mark.parametrize(
    ("wrap", "form"),
    [
        (lambda sd: sd, "state_dict"),
        (lambda sd: {"state_dict": sd, "epoch": 3}, "state_dict under 'state_dict'"),
        (lambda sd: {"model": sd}, "state_dict under 'model'"),
        (lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 0.1}}, "state_dict under 'model_state_dict'"),
        (lambda sd: {"module." + k: v for k, v in sd.items()}, "state_dict, 'module.' prefix removed"),
        (lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}}, "under 'state_dict', 'module.'"),
    ],
)
def test_every_checkpoint_form_loads(tmp_path: Path, net: GhostNet, wrap, form: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.pth"
    torch.save(wrap(net.state_dict()), path)
    loaded = load_model(path, Overrides(input_size=64))
    assert form.split(", ")[-1] in loaded.checkpoint_form or form in loaded.checkpoint_form
    assert loaded.info.width == 0.5 and loaded.info.num_classes == 5
    assert loaded.info.source == "inferred"
    assert _same(loaded.module, net)


def test_thop_counters_are_ignored(tmp_path: Path, net: GhostNet) -> None:
    sd = dict(net.state_dict())
    sd["total_ops"] = torch.tensor(1.0)
    sd["blocks.0.0.total_params"] = torch.tensor(2.0)
    torch.save(sd, tmp_path / "t.pt")
    assert _same(load_model(tmp_path / "t.pt", Overrides(input_size=64)).module, net)


@pytest.mark.parametrize("width", [0.5, 1.0, 1.3, 0.75, 1.6])
def test_width_is_inferred_from_shapes(width: float) -> None:
    assert infer_width(GhostNet(3, width).state_dict()) == width


def test_our_metadata_round_trips(tmp_path: Path, net: GhostNet) -> None:
    info = ModelInfo(
        "ghostnet_050",
        0.5,
        5,
        64,
        Preprocessing(72, 64, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)),
        labels=tuple("abcde"),
        data={"test": "imgs"},
    )
    save_checkpoint(tmp_path / "m.pt", net, info)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["ghost_deploy"]["labels"] == list("abcde")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.info.to_dict() == info.to_dict()
    assert loaded.info.source == "metadata"


def test_flags_override_preprocessing_and_labels(tmp_path: Path, net: GhostNet) -> None:
    torch.save(net.state_dict(), tmp_path / "c.pt")
    loaded = load_model(
        tmp_path / "c.pt",
        Overrides(
            arch="ghostnet_050", input_size=96, mean=(0.5, 0.5, 0.5), interpolation="bicubic", labels=tuple("vwxyz")
        ),
    )
    pre = loaded.info.preprocessing
    assert (loaded.info.input_size, pre.crop, pre.resize) == (96, 96, 110)  # 256/224 of the crop
    assert pre.mean == (0.5, 0.5, 0.5) and pre.interpolation == "bicubic"
    assert loaded.info.labels == tuple("vwxyz") and loaded.info.source == "flags"


def test_wrong_label_count_is_refused(tmp_path: Path, net: GhostNet) -> None:
    torch.save(net.state_dict(), tmp_path / "c.pt")
    with pytest.raises(InputError, match="3 labels for a model with 5 classes"):
        load_model(tmp_path / "c.pt", Overrides(labels=("a", "b", "c")))


def test_another_architecture_names_keys_and_shapes(tmp_path: Path) -> None:
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).state_dict(), tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match=r"not a GhostNet state_dict: no 'conv_stem.weight'"):
        load_model(tmp_path / "o.pt")


def test_mismatch_lists_missing_unexpected_and_differing(tmp_path: Path, net: GhostNet) -> None:
    sd = dict(net.state_dict())
    del sd["conv_head.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["classifier.bias"] = torch.zeros(7)
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "m.pt")
    text = str(err.value)
    assert "1 missing keys: conv_head.bias" in text
    assert "1 unexpected keys: extra.weight" in text
    assert "classifier.bias (7,) vs (5,)" in text


def test_input_size_not_divisible_by_32(tmp_path: Path, net: GhostNet) -> None:
    torch.save(net.state_dict(), tmp_path / "c.pt")
    with pytest.raises(InputError, match=r"not a multiple of 32.*use 96 or 128"):
        load_model(tmp_path / "c.pt", Overrides(input_size=100))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, this is a text file\n", "not a PyTorch checkpoint"),
        (os.urandom(4096), "not a PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "x.pt")


def test_truncated_checkpoint(tmp_path: Path, net: GhostNet) -> None:
    torch.save(net.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "cut.pt")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "PWNED"
    obj = {"state_dict": _Evil(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model(path)
    assert not marker.exists(), "unpickling ran code"


def test_pickled_module_needs_trust_then_any_classifier_works(tmp_path: Path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 6)
    ).eval()
    torch.save(model, tmp_path / "mod.pt")
    with pytest.raises(CheckpointError, match=r"dangerous|can take over|--trust-checkpoint"):
        load_model(tmp_path / "mod.pt")
    loaded = load_model(tmp_path / "mod.pt", Overrides(input_size=64), trust=True)
    assert loaded.info.arch == "custom" and loaded.info.num_classes == 6
    assert loaded.checkpoint_form == "pickled module"


@pytest.mark.slow
def test_torchscript_needs_trust(tmp_path: Path, net: GhostNet) -> None:
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), tmp_path / "ts.pt")
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_model(tmp_path / "ts.pt")
    loaded = load_model(tmp_path / "ts.pt", Overrides(input_size=64), trust=True)
    assert loaded.info.num_classes == 5 and loaded.checkpoint_form == "TorchScript"


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(InputError, match="is a directory"):
        load_model(tmp_path)


# --- reliability (issue 13) ---


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "all-nan"])
def test_non_finite_weights_are_refused_unless_allowed(tmp_path: Path, net: GhostNet, value: object) -> None:
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if value == "all-nan":
        state = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    else:
        state["classifier.weight"][2, 0] = value  # one weight of one class
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"non-finite weights \(NaN or Inf\).*--allow-nonfinite-weights"):
        load_model(tmp_path / "bad.pt")
    loaded = load_model(tmp_path / "bad.pt", allow_nonfinite=True)
    assert not torch.isfinite(loaded.module.classifier.weight).all()


@pytest.mark.slow
def test_a_zip_bomb_checkpoint_is_refused_before_torch_allocates(tmp_path: Path, net: GhostNet) -> None:
    """The archive's central directory promises 4.3 GB for data.pkl; the load runs under a 2 GB address limit."""
    import struct

    from tests.helpers import run_limited

    torch.save(net.state_dict(), tmp_path / "ok.pt")
    data = bytearray((tmp_path / "ok.pt").read_bytes())
    entry = data.find(b"PK\x01\x02")  # the central directory's first record: data.pkl
    assert data[entry + 46 : entry + 46 + struct.unpack_from("<H", data, entry + 28)[0]].endswith(b"data.pkl")
    struct.pack_into("<I", data, entry + 24, 0xFFFF0000)  # its uncompressed size
    (tmp_path / "bomb.pt").write_bytes(bytes(data))
    code = (
        "import sys; from pathlib import Path; from ghost_deploy.model.checkpoint import load_model\n"
        "try:\n    load_model(Path(sys.argv[1]))\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"
    )
    proc = run_limited(code, str(tmp_path / "bomb.pt"), memory=2 << 30)
    assert proc.stdout.startswith("CheckpointError") and "zip bomb" in proc.stdout, proc.stdout + proc.stderr[-800:]


@pytest.mark.slow
def test_a_fifo_given_as_the_model_is_refused_not_waited_on(tmp_path: Path) -> None:
    from tests.helpers import run_limited

    os.mkfifo(tmp_path / "model.pt")
    code = "import sys; from ghost_deploy.cli.main import export_main; sys.exit(export_main(sys.argv[1:]))"
    proc = run_limited(code, str(tmp_path / "model.pt"), "-o", str(tmp_path / "m.onnx"), timeout=60)
    assert proc.returncode == 2 and "is a FIFO, not a regular file" in proc.stderr
