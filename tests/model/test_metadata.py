"""A checkpoint's metadata and tensors are input: bounded as the flags are, and checked against the weights'
shapes before a model is built from them (exit 2 in one line, never an allocation the metadata asks for)."""

from __future__ import annotations

import copy
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ghost_deploy.errors import CheckpointError
from ghost_deploy.model.checkpoint import load_model
from ghost_deploy.model.info import ModelInfo
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    """The trained ghostnet_025 fixture (32 x 32, 10 classes): its state_dict and metadata."""
    return dict(torch.load(TINY_MODEL, weights_only=True))


def _saved(tmp_path: Path, tiny: dict[str, Any], meta: Callable[[dict[str, Any]], None] | None = None,
           state: Callable[[dict[str, Any]], None] | None = None) -> Path:  # fmt: skip
    """The fixture with its metadata and/or state_dict edited, saved to tmp_path/c.pt."""
    ckpt = copy.deepcopy(tiny)
    if meta is not None:
        meta(ckpt["ghost_deploy"])
    if state is not None:
        state(ckpt["state_dict"])
    path = tmp_path / "c.pt"
    torch.save(ckpt, path)
    return path


def _refused(path: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path)
    text = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in text and str(path) in text
    return text


def _crop(m: dict[str, Any], size: int) -> None:
    m.update(input_size=size)
    m["preprocessing"].update(resize=size, crop=size)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(width=float("nan")), r"width nan is not a finite number in 0\.\.4"),
        (lambda m: m.update(width=4.5), r"width 4\.5 is not a finite number in 0\.\.4"),
        (lambda m: m.update(width="0.25"), r"malformed .*width must be a number"),
        (lambda m: m.update(num_classes=10**9), r"num_classes 1000000000 is outside 1\.\.1000000"),
        (lambda m: m.update(num_classes=10**12), r"num_classes 1000000000000 is outside"),
        (lambda m: m.update(num_classes=10.0), r"malformed .*num_classes must be an integer"),
        (lambda m: _crop(m, 3520), r"input_size 3520 is outside 1\.\.2048"),
        pytest.param(
            lambda m: m.update(labels=["x"] * 1_000_001),
            r"1000001 labels, more than the 1000000 classes",
            marks=pytest.mark.slow,  # saving and loading a million labels: 3 s
        ),
        (lambda m: m.update(labels=["x" * 1001] * 10), r"label 0 has 1001 characters \(at most 1000\)"),
        (lambda m: m.update(labels=list(range(10))), r"malformed .*label 0 is a int"),
        (lambda m: m.update(data=["test"]), r"malformed .*data must be a mapping"),
        (lambda m: m.update(data={"test": "x" * 5000}), r"data\.test must be 1 to 4096 characters"),
        (lambda m: m.update(arch=["ghostnet_025"]), r"malformed .*arch must be a string"),
    ],
)
def test_metadata_out_of_bounds_is_one_line_exit_2(tmp_path: Path, tiny: dict[str, Any], edit, match: str) -> None:  # type: ignore[no-untyped-def]
    _refused(_saved(tmp_path, tiny, meta=edit), match)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # a width the bounds allow, but not the weights': refused on the shapes, before a 1.0x model is built
        (lambda m: m.update(width=1.0), r"says ghostnet_025 \(width 1\), which needs 16 rows in 'conv_stem.weight'"),
        (lambda m: m.update(width=0.0), r"width 0\.0 is not a GhostNet's"),
    ],
)
def test_metadata_that_disagrees_with_the_weights_is_refused_before_building(
    tmp_path: Path,
    tiny: dict[str, Any],
    edit,
    match: str,  # type: ignore[no-untyped-def]
) -> None:
    _refused(_saved(tmp_path, tiny, meta=edit), match)


@pytest.mark.parametrize(
    ("key", "make", "match"),
    [
        ("conv_stem.weight", lambda t: t.to_sparse(), r"'conv_stem.weight' holds a sparse tensor"),
        ("classifier.weight", lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), r"a quantized tensor"),
        ("classifier.weight", lambda t: t.to("meta"), r"'classifier.weight' holds a meta tensor"),
        ("classifier.weight", lambda t: t.to(torch.complex64), r"a torch.complex64 tensor, not floating point"),
        ("bn1.weight", lambda t: t.to(torch.int32), r"'bn1.weight' holds a torch.int32 tensor"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*quantize_per_tensor:UserWarning")
def test_sparse_quantized_meta_or_non_float_weights_are_one_line_exit_2(
    tmp_path: Path,
    tiny: dict[str, Any],
    key: str,
    make,
    match: str,  # type: ignore[no-untyped-def]
) -> None:
    _refused(_saved(tmp_path, tiny, state=lambda sd: sd.update({key: make(sd[key])})), match)


def test_metadata_within_bounds_still_loads(tmp_path: Path, tiny: dict[str, Any]) -> None:
    loaded = load_model(_saved(tmp_path, tiny, meta=lambda m: m.update(labels=[f"digit {i}" for i in range(10)])))
    assert loaded.info.width == 0.25 and loaded.info.num_classes == 10 and loaded.info.labels[3] == "digit 3"  # type: ignore[index]


def test_an_onnx_report_is_bounded_too(tiny: dict[str, Any]) -> None:
    data = {**tiny["ghost_deploy"], "arch": "onnx", "width": 0.0, "num_classes": 10**9}
    with pytest.raises(CheckpointError, match=r"^x.onnx.json: the ONNX's ghost-deploy report is out of bounds"):
        ModelInfo.from_dict(data, source="report", origin="x.onnx.json")


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a 1000x GhostNet alone would need 3.4 GB


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(width=1000.0), "width 1000.0 is not a finite number"),
        (lambda m: _crop(m, 3520), "input_size 3520 is outside 1..2048"),
    ],
)
def test_the_cli_refuses_huge_metadata_at_once(tmp_path: Path, tiny: dict[str, Any], edit, match: str) -> None:  # type: ignore[no-untyped-def]
    """Before the bound: width 1000 allocated 3.4 GB (exit 1, or the OOM killer); 3520 exported for minutes."""
    path = _saved(tmp_path, tiny, meta=edit)
    code = "import sys; from ghost_deploy.cli.main import export_main; sys.exit(export_main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), "-o", str(tmp_path / "o.onnx"), "-q"],
        capture_output=True, text=True, timeout=60, preexec_fn=_limited,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and match in proc.stderr
    assert not (tmp_path / "o.onnx").exists()
