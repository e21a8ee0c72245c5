"""ghost-deploy pack: bundle contents, manifest schema, atomic writes, and the DeepStream configuration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghost_deploy.bundle.deepstream import Normalisation, deepstream_normalise, normalisation, parse_config
from ghost_deploy.bundle.pack import pack
from ghost_deploy.bundle.runtime import MANIFEST, Bundle, validate_manifest
from ghost_deploy.data.preprocess import Preprocessing, preprocess_image
from ghost_deploy.errors import InputError
from tests.helpers import exported, run_cli


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """FP32 and ort-int8 ONNX of the shipped model, with their reports."""
    return exported(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_pack_directory_holds_every_file_with_its_hash(artifacts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    report = pack([artifacts["onnx"], artifacts["ort-int8"]], out)
    manifest = json.loads((out / MANIFEST).read_text())
    validate_manifest(manifest)
    names = {f["path"] for f in manifest["files"]}
    assert names | {MANIFEST} == {p.name for p in out.iterdir()}
    assert {"digits.onnx", "digits.ort-int8.onnx", "labels.txt", "README.md", "config_infer_primary.txt"} <= names
    assert (out / "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "int8"]
    calibration = manifest["artifacts"][1]["build"]["calibration"]
    assert calibration["method"] == "minmax" and "ranges" not in calibration  # the default ranges, recorded
    assert manifest["input"]["shape"] == [1, 3, 64, 64] and manifest["output"]["name"] == "logits"
    assert manifest["artifacts"][0]["verification"]["metrics"]["top1_agreement"] == 1.0
    assert (out / "digits.onnx").read_bytes() == artifacts["onnx"].read_bytes()  # as it is, no header
    readme = (out / "README.md").read_text()
    assert "y[c] = (p / 255 - mean[c]) / std[c]" in readme and "0.305" in readme
    assert report["warnings"] == []


def test_pack_tar_gz_and_refusals(artifacts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    pack([artifacts["ort-int8"]], out)
    with Bundle.open(out) as bundle:
        assert bundle.artifact["target"] == "ort-int8"
    with pytest.raises(InputError, match="exists"):
        pack([artifacts["ort-int8"]], out)
    with pytest.raises(InputError, match="no report"):
        lonely = tmp_path / "x.onnx"
        lonely.write_bytes(b"onnx")
        pack([lonely], tmp_path / "c")


def test_failed_pack_leaves_nothing(artifacts: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    art = src / "m.onnx"
    art.write_bytes(artifacts["onnx"].read_bytes() + b"x")  # differs from its report's sha256
    (src / "m.onnx.json").write_text(artifacts["onnx"].with_name("digits.onnx.json").read_text())
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InputError, match="sha256"):
        pack([art], dest / "bundle.tar.gz")
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("mean", "std"),
    [((0.305,) * 3, (0.324,) * 3), ((0.485, 0.456, 0.406), (0.25, 0.25, 0.25)), ((0.0, 0.5, 1.0), (1.0, 1.0, 1.0))],
)
def test_deepstream_numbers_reproduce_our_preprocessing(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """The written net-scale-factor and offsets, parsed back, give our normalised values on every 8-bit pixel."""
    from ghost_deploy.bundle.deepstream import render_config

    manifest = {
        "preprocessing": {"mean": list(mean), "std": list(std), "resize": 16, "crop": 16, "interpolation": "bilinear"},
        "input": {"shape": [1, 3, 16, 16], "dynamic_batch": None},
        "output": {"name": "logits"},
        "labels_file": "labels.txt",
    }
    text, norm = render_config(manifest, {"file": "m.onnx", "kind": "onnx", "precision": "fp32"}, None)
    cfg = parse_config(text)
    parsed = Normalisation(
        float(cfg["net-scale-factor"]), tuple(float(v) for v in cfg["offsets"].split(";")), norm.exact, ""
    )  # type: ignore[arg-type]
    img = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)  # every 8-bit value on every channel
    ours = preprocess_image(Image.fromarray(img, "RGB"), Preprocessing(16, 16, mean, std)).transpose(1, 2, 0)  # type: ignore[arg-type]
    theirs = deepstream_normalise(img, parsed)
    assert norm.exact
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-6)
    assert cfg["network-type"] == "1" and cfg["model-color-format"] == "0" and cfg["infer-dims"] == "3;16;16"
    assert cfg["onnx-file"] == "m.onnx" and cfg["network-mode"] == "0"


def test_deepstream_per_channel_std_is_flagged_not_silent() -> None:
    norm = normalisation((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert not norm.exact and "mean std" in norm.note
    assert norm.offsets == (255 * 0.485, 255 * 0.456, 255 * 0.406)


@pytest.mark.slow
def test_pack_cli_json(artifacts: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("pack", str(artifacts["onnx"]), "-o", str(tmp_path / "b"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest"]["schema_version"] == 1
    proc = run_cli("pack", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "c"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "c").exists()


# --- reliability (issue 13): what failed its gates is not packed unless asked, and then it says so ---


def test_pack_refuses_a_failed_artifact_unless_allow_failed_and_then_everyone_warns(
    tiny_exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ghost_deploy.bundle.runtime import FailedGateWarning, NonFiniteOutputError
    from ghost_deploy.cli.main import main
    from tests.helpers import DIGITS

    failed = tiny_exports["failed"]  # nan.failed.onnx: NaN logits in class 3, its report says so
    assert main(["pack", str(failed), "-o", str(tmp_path / "refused")]) == 4
    err = capsys.readouterr().err
    assert "did not pass its gates" in err and "--allow-failed" in err and not (tmp_path / "refused").exists()
    out = tmp_path / "b.tar.gz"
    assert main(["pack", str(failed), "-o", str(out), "--allow-failed"]) == 0
    with pytest.warns(FailedGateWarning, match="packed anyway with --allow-failed"), Bundle.open(out) as bundle:
        gate = bundle.manifest["artifacts"][0]["gate"]
        assert gate["passed"] is False and gate["packed_with"] == "--allow-failed" and gate["why"]
        with pytest.raises(NonFiniteOutputError, match=r"non-finite outputs .* classes \[3\]"):
            bundle.predict(sorted((DIGITS / "test" / "3").glob("*.png"))[0])
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "warning: nan.failed.onnx did not pass its gates" in capsys.readouterr().out
    image = sorted((DIGITS / "test" / "3").glob("*.png"))[0]
    assert main(["run", str(out), str(image), "--json"]) == 4  # never 'nan' scores with exit 0
    captured = capsys.readouterr()
    assert "non-finite outputs" in captured.err and "nan" not in captured.out.lower()


def test_pack_refuses_an_artifact_changed_after_its_report_unless_allow_failed(
    tiny_exports: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    art = tmp_path / "m.onnx"
    shutil.copyfile(tiny_exports["good"], art)
    shutil.copyfile(tiny_exports["good"].with_name("tiny.onnx.json"), tmp_path / "m.onnx.json")
    import onnx

    model = onnx.load(str(art))
    model.doc_string = "changed after verification"
    onnx.save(model, str(art))
    with pytest.raises(InputError, match="sha256 differs from its report's"):
        pack([art], tmp_path / "b")
    report = pack([art], tmp_path / "b", allow_failed=True)
    assert report["manifest"]["artifacts"][0]["gate"]["why"][0].startswith("m.onnx's sha256 differs")
    assert any("did not pass its gates" in w for w in report["warnings"])


def test_pack_onto_a_fifo_is_refused(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "b.tar.gz")
    with pytest.raises(InputError, match="is a FIFO, not a regular file"):
        pack([tiny_exports["good"]], tmp_path / "b.tar.gz", force=True)
    assert (tmp_path / "b.tar.gz").is_fifo()


@pytest.mark.slow
def test_packed_int8_engine_records_how_its_ranges_were_made(tmp_path: Path) -> None:
    # no GPU here: the engine is built by the TensorRT simulator, which is what packs it; the calibration comes
    # from the report of the Q/DQ ONNX the engine was built from
    from ghost_deploy.config import ExportConfig
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_engine import export_engine
    from ghost_deploy.testing import trtsim
    from tests.helpers import SHIPPED_MODEL

    engine = tmp_path / "e.engine"
    cfg = ExportConfig(target="trt-int8", output=engine, eval_limit=24, calib_size=16)
    with trtsim.simulate("10.3"):
        export_engine(SHIPPED_MODEL, cfg, Steps(echo=lambda text: None))
        pack([engine], tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / MANIFEST).read_text())
    calibration = manifest["artifacts"][0]["build"]["calibration"]
    assert calibration == {"method": "minmax", "images": 16, "cache_header": "EntropyCalibration2"}


# --- what a new user hit (issue 15) ---


def test_an_ort_int8_bundle_has_no_deepstream_config_and_says_why(artifacts: dict[str, Path], tmp_path: Path) -> None:
    report = pack([artifacts["ort-int8"]], tmp_path / "cpu")
    assert not (tmp_path / "cpu" / "config_infer_primary.txt").exists() and "deepstream" not in report["manifest"]
    assert any("ort-int8 is ONNX Runtime's CPU layout" in w for w in report["warnings"])
    assert "No nvinfer configuration" in (tmp_path / "cpu" / "README.md").read_text()
    both = pack([artifacts["ort-int8"], artifacts["onnx"]], tmp_path / "both")  # the config is for the FP32 ONNX
    config = (tmp_path / "both" / "config_infer_primary.txt").read_text()
    assert both["manifest"]["deepstream"]["file"] == "config_infer_primary.txt"
    assert "onnx-file=digits.onnx" in config and "network-mode=0" in config


@pytest.mark.slow
def test_the_manifest_keeps_summaries_and_relative_paths(artifacts: dict[str, Path], tmp_path: Path) -> None:
    onnx_path = artifacts["onnx"]
    args = ["--duration-s", "0.05", "--warmup-ms", "5", "--layer-runs", "0", "--cv-threshold", "0.0001"]
    proc = run_cli("profile", str(onnx_path), *args, "-o", str(tmp_path / "p.json"))
    assert proc.returncode == 0, proc.stderr
    report = pack([onnx_path], tmp_path / "b", profile=tmp_path / "p.json")
    entry = report["manifest"]["artifacts"][0]
    assert 'latency_ms": [' not in json.dumps(entry["latency"]) and '"queries"' not in json.dumps(
        entry
    )  # per-query times stay in the profile file
    assert entry["latency"]["results"][0]["latency_ms"]["median"] > 0
    assert (tmp_path / "b" / "digits.onnx.profile.json").is_file()
    assert any("unstable" in w and "not comparable" in w for w in report["warnings"])  # a CV above 0.0001%

    def strings(obj: object) -> list[str]:
        if isinstance(obj, dict):
            return [s for v in obj.values() for s in strings(v)]
        if isinstance(obj, list):
            return [s for v in obj for s in strings(v)]
        return [obj] if isinstance(obj, str) else []

    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [s for s in strings(manifest) if s.startswith("/")] == []  # nothing of the packing machine's paths
    inspect = run_cli("inspect", str(tmp_path / "b"))
    assert "fixed batch 1" in inspect.stdout and "None" not in inspect.stdout


def test_a_bundle_made_before_these_fields_still_opens(tiny_bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for art in manifest["artifacts"]:  # the 0.1 layout: no gate, no simulated flag, latency absent
        for key in ("gate", "latency"):
            art.pop(key, None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    with Bundle.open(old) as bundle:
        assert bundle.manifest["schema_version"] == 1 and bundle.labels


def test_pack_force_never_deletes_a_users_old_folder(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    """`.NAME.old` was where pack put the bundle it replaced, deleting whatever a user kept under that name."""
    out = tmp_path / "b"
    pack([tiny_exports["good"]], out)
    mine = tmp_path / ".b.old"
    mine.mkdir()
    (mine / "precious.txt").write_text("the user's")
    first = out.stat().st_ino
    pack([tiny_exports["good"]], out, force=True)
    assert (mine / "precious.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.old", "b"]  # the replaced bundle is gone, nothing else
    assert out.stat().st_ino != first and (out / MANIFEST).is_file()  # replaced by the new bundle


def test_a_killed_packs_staging_is_removed_by_the_next_pack(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    for name in (".b.tar.gz", ".b"):  # what a SIGKILLed pack leaves: its staging folder, its archive's temporary
        staging = tmp_path / f"{name}.ghost-{dead}-0123abcd.tmp"
        staging.mkdir()
        (staging / "manifest.json").write_text("{}")
    (tmp_path / f".b.tar.gz.ghost-{dead}-4567cdef.tmp").write_bytes(b"\x1f\x8b partial")
    pack([tiny_exports["good"]], tmp_path / "b.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".b.ghost-{dead}-0123abcd.tmp", "b.tar.gz"]  # another's
    pack([tiny_exports["good"]], tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.tar.gz"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["b.tar.gz", "b"])
def test_pack_under_a_file_size_limit_is_one_clear_line(
    tiny_exports: dict[str, Path], tmp_path: Path, name: str
) -> None:
    from tests.helpers import run_limited

    out = tmp_path / "out" / name
    code = "import sys; from ghost_deploy.cli.main import main; sys.exit(main(['pack', *sys.argv[1:]]))"
    proc = run_limited(code, str(tiny_exports["good"]), "-o", str(out), file_size=1000)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"cannot write {out}: file too large" in errors[0], proc.stderr
    assert "unexpected" not in proc.stderr and list(out.parent.iterdir()) == []  # no bundle, no staging left


@pytest.mark.slow
def test_run_under_a_file_size_limit_blames_the_limit_not_the_archive(
    tiny_exports: dict[str, Path], tmp_path: Path
) -> None:
    from tests.helpers import DIGITS, run_limited

    bundle = tmp_path / "b.tar.gz"
    pack([tiny_exports["good"]], bundle)
    image = sorted((DIGITS / "test").rglob("*.png"))[0]
    code = "import sys; from ghost_deploy.cli.main import main; sys.exit(main(['run', *sys.argv[1:]]))"
    proc = run_limited(code, str(bundle), str(image), file_size=1000)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "file too large" in errors[0] and f"cannot read {bundle}" not in errors[0], errors
