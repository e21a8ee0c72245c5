"""ghost_deploy.config: what a user may ask for is bounded and finite, checked before any work or allocation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ghost_deploy.cli.main import export_main, main
from ghost_deploy.config import BatchSpec, ExportConfig, Overrides, Tolerances, check_batch_memory
from ghost_deploy.errors import InputError
from tests.helpers import tiny_onnx


@pytest.mark.parametrize(
    "changes",
    [{"max_abs": float("nan")}, {"max_abs": 0.0}, {"rtol": float("inf")}, {"min_cosine": float("nan")},
     {"min_agreement": 1.5}, {"max_accuracy_drop": -0.1}],
)  # fmt: skip
def test_tolerances_must_be_finite_and_positive(changes: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(InputError, match="must be a finite number"):
        Tolerances(**changes)


def test_batches_are_bounded_before_any_allocation() -> None:
    with pytest.raises(InputError, match="--batch must be between 1 and 1024"):
        BatchSpec(100_000)
    with pytest.raises(InputError, match="MAX <= 1024"):
        BatchSpec(None, (1, 8, 100_000))
    check_batch_memory(BatchSpec(256), 224)
    with pytest.raises(InputError, match="at most 64"):  # 256 x 224 x 224 pixels at most: 64 at 448
        check_batch_memory(BatchSpec(128), 448)
    with pytest.raises(InputError, match="--calib-size must be between 1 and 100000"):
        ExportConfig(calib_size=10**7)
    with pytest.raises(InputError, match="at most 12"):
        ExportConfig(batch=BatchSpec(64), overrides=Overrides(input_size=1024))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "100000"], "--batch: must be at most 1024"),
        (["--dynamic-batch", "1:8:100000"], "MAX <= 1024"),
        (["--input-size", "100000"], "--input-size: must be at most 2048"),
        (["--calib-size", "10000000"], "--calib-size: must be at most 100000"),
        (["--resize", "16384"], "--resize: must be at most 4096"),
        (["--atol", "nan"], "--atol must be a finite number > 0"),
        (["--atol", "-1"], "--atol must be a finite number > 0"),
        (["--min-cosine", "inf"], "--min-cosine must be a finite number"),
        (["--mean", "nan,0.5,0.5"], "finite"),
        (["--std", "inf,1,1"], "finite"),
        (["--std", "0,1,1"], "std positive"),
        (["--max-accuracy-drop", "nan"], "--max-accuracy-drop (points) must be a finite number"),
    ],
)
def test_bad_flag_values_exit_2_with_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    try:
        code = export_main([str(model), "-o", str(tmp_path / "out.onnx"), *args])
    except SystemExit as exc:  # argparse's own refusal: usage line + one error line, exit 2
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]  # nothing was written


def test_output_onto_a_fifo_or_a_directory_exits_2_and_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    os.mkfifo(tmp_path / "fifo.onnx")
    (tmp_path / "dir.onnx").mkdir()
    for target, kind in (("fifo.onnx", "a FIFO"), ("dir.onnx", "a directory")):
        assert export_main([str(model), "-o", str(tmp_path / target)]) == 2
        assert f"is {kind}, not a regular file" in capsys.readouterr().err
    report = tmp_path / "fifo.onnx"
    assert main(["verify", str(model), "--reference", str(model), "-o", str(report)]) == 2
    assert (tmp_path / "fifo.onnx").is_fifo() and (tmp_path / "dir.onnx").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: run as a user to check this")
def test_pack_into_a_read_only_folder_is_refused_before_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code = export_main([str(model), "-o", str(tmp_path / "out.onnx"), "--pack", str(locked / "b.tar.gz")])
    err = capsys.readouterr().err
    assert code == 2 and str(locked) in err and "Traceback" not in err
    assert not (tmp_path / "out.onnx").exists()  # refused before any work
