"""What a model file's own metadata may steer: never which folders are read outside the model's folder, and
never shapes that the ONNX itself contradicts (`model.datapaths`, `stages.evaldata`, `stages.source`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ghost_deploy.config import ExportConfig
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import InputError
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.stages.evaldata import eval_data
from ghost_deploy.stages.export_onnx import calibration_path
from tests.helpers import DIGITS, run_cli, tiny_onnx


def _images(folder: Path, count: int = 3) -> Path:
    """`count` digit images in folder/0 (one class folder), as a user's image folder holds them."""
    (folder / "0").mkdir(parents=True)
    for src in sorted((DIGITS / "test" / "0").glob("*.png"))[:count]:
        shutil.copy(src, folder / "0" / src.name)
    return folder


def _info(source: str = "metadata", **data: str) -> ModelInfo:
    return ModelInfo("ghostnet_025", 0.25, 10, 32, Preprocessing(32, 32), data=dict(data), source=source)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(the model file's folder holding images/ and a link out, a folder of images outside it)."""
    model_dir, outside = tmp_path / "model", _images(tmp_path / "outside")
    _images(model_dir / "images")
    (model_dir / "link").symlink_to(outside, target_is_directory=True)
    return model_dir, outside


@pytest.mark.parametrize("named", ["ABSOLUTE", "../outside", "link", "images/../../outside", "/"])
@pytest.mark.parametrize("source", ["metadata", "report"])
def test_metadata_test_split_outside_the_models_folder_is_not_read(
    layout: tuple[Path, Path], named: str, source: str
) -> None:
    model_dir, outside = layout
    named = str(outside) if named == "ABSOLUTE" else named
    data = eval_data(_info(source, test=named), model_dir, None, limit=50)
    desc = data.description
    assert desc["kind"] == "fallback" and desc["images_source"] in ("shipped digits + seeded random", "seeded random")
    assert "outside the model's folder" in desc["note"] and repr(named)[:60] in desc["refused_metadata_folder"]
    assert str(outside) not in json.dumps({k: v for k, v in desc.items() if k != "refused_metadata_folder"})
    roots = [Path(src.root).resolve() for src in data.sources if hasattr(src, "root")]
    assert outside.resolve() not in roots and len(data) == 32 + 16  # the shipped digits and the random inputs


def test_metadata_test_split_inside_the_models_folder_is_read(layout: tuple[Path, Path]) -> None:
    model_dir, _ = layout
    data = eval_data(_info(test="images"), model_dir, None, limit=50)
    assert data.description["kind"] == "model-test-split" and len(data) == 3
    assert data.description["images_source"] == f"checkpoint metadata data.test ({model_dir.resolve() / 'images'})"


def test_the_shipped_images_may_be_named_from_anywhere(tmp_path: Path) -> None:
    """The shipped model (and every ONNX exported from it) names the digits with `..`: they are ghost-deploy's own."""
    from ghost_deploy.model.datapaths import metadata_folder

    named = os.path.relpath(DIGITS / "test", tmp_path)
    found = metadata_folder(_info(test=named), "test", tmp_path)
    assert found.refused is None and found.path == (DIGITS / "test").resolve()


@pytest.mark.parametrize("named", ["/", "../outside", "link"])
def test_metadata_calibration_outside_the_models_folder_is_never_walked(layout: tuple[Path, Path], named: str) -> None:
    """Before: data.calibration "/" walked the whole filesystem (21,262 files, 50 s); now exit 2 at once."""
    model_dir, _ = layout
    cfg = ExportConfig(target="onnx-int8")
    with pytest.raises(InputError, match=r"needs calibration data.*data\.calibration was not read: it is outside"):
        calibration_path(cfg, _info(calibration=named), model_dir)
    assert calibration_path(cfg, _info(calibration="images"), model_dir) == model_dir.resolve() / "images"
    assert calibration_path(cfg.replace(calib=model_dir / "link"), _info(calibration=named), model_dir) is not None


def _report(onnx_path: Path, **model: object) -> None:
    pre = Preprocessing(32, 32).to_dict()
    entry = {"arch": "onnx", "width": 0.0, "num_classes": 10, "input_size": 32, "preprocessing": pre, **model}
    onnx_path.with_name(onnx_path.name + ".json").write_text(json.dumps({"model": entry}))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"input_size": 2048, "preprocessing": Preprocessing(2048, 2048).to_dict()}, r"says 2048 x 2048 inputs, but"),
        ({"num_classes": 12}, r"says 12 classes, but m.onnx's output has 10"),
        ({"num_classes": 10**9}, r"out of bounds: num_classes 1000000000"),
        ({"preprocessing": Preprocessing(64, 64).to_dict()}, r"contradicts itself: input size 32 but .* crop 64"),
    ],
)
def test_a_report_beside_an_onnx_must_describe_that_onnx(tmp_path: Path, model: dict[str, object], match: str) -> None:
    """Before: a report claiming a 2048 crop reached ONNX Runtime (exit 1); 1e9 or 12 classes passed."""
    from ghost_deploy.backends.onnx.files import load_onnx
    from ghost_deploy.config import Overrides
    from ghost_deploy.stages.source import info_from_onnx

    path = tiny_onnx(tmp_path / "m.onnx")
    _report(path, **model)
    with pytest.raises(InputError, match=match) as err:
        info_from_onnx(load_onnx(path), path, Overrides())
    assert "\n" not in str(err.value) and "m.onnx.json" in str(err.value)


@pytest.mark.slow
def test_export_of_an_onnx_whose_report_names_a_folder_outside_says_so(tmp_path: Path) -> None:
    """End to end: the warning line, the summary's images line, the report's record, and nothing read outside."""
    outside = _images(tmp_path / "outside")
    path = tiny_onnx((tmp_path / "m").mkdir() or tmp_path / "m" / "m.onnx")
    _report(path, data={"test": str(outside), "calibration": "../outside"})
    out = tmp_path / "m" / "o.onnx"
    proc = run_cli("ghost-export", str(path), "-o", str(out), "--eval-limit", "4")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: the ONNX's report names data.test = '{outside}'" in proc.stderr
    assert "  images: shipped digits + seeded random" in proc.stdout
    report = json.loads(out.with_name("o.onnx.json").read_text())
    assert report["verification"]["data"]["kind"] == "fallback"
    assert report["model"]["data"] == {}  # the refused folders are not carried into the new report
