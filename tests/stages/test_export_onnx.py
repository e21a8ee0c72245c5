"""ghost_deploy.stages.export_onnx: an artifact exists only when it passed, whatever happens to the run."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ghost_deploy.cli.main import export_main
from ghost_deploy.fileio import loads_strict
from tests.helpers import DIGITS, REPO, exported, run_limited, tiny_onnx


def _state(folder: Path) -> dict[str, str]:
    """Every file of `folder` (hidden ones too) with the sha256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _older_good_export(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model's FP32 ONNX and its report, as an earlier successful run left them."""
    digits = exported(tmp_path_factory.getbasetemp())["onnx"]
    out = folder / "out.onnx"
    shutil.copyfile(digits, out)
    shutil.copyfile(digits.with_name(digits.name + ".json"), out.with_name("out.onnx.json"))
    return out


def _slow_export(source: Path, out: Path, images: int = 600) -> subprocess.Popen[str]:
    """ghost-export of the digits ONNX verified on `images` shipped images (a second of [verify]), in a process."""
    code = "import sys; from ghost_deploy.cli.main import export_main; sys.exit(export_main())"
    args = [str(source), "-o", str(out), "--eval", str(DIGITS), "--eval-limit", str(images)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO,
        env=env,
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen[str], marker: str) -> str:
    """Read the run's progress until a line starts with `marker`; return what was read."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if line.startswith(marker):
            return seen
    raise AssertionError(f"the run ended (exit {proc.wait()}) before {marker!r}:\n{seen}")


def test_a_failed_gate_leaves_the_destination_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, broken = tiny_onnx(tmp_path / "good.onnx"), tiny_onnx(tmp_path / "broken.onnx", poison=1e38)
    out = tmp_path / "out" / "m.onnx"
    assert export_main([str(good), "-o", str(out), "--eval-limit", "8"]) == 0
    before = _state(out.parent)
    assert export_main([str(broken), "-o", str(out), "--eval-limit", "8"]) == 4  # finite weights, Inf logits
    err = capsys.readouterr().err
    assert "non-finite outputs" in err and "m.failed.onnx.json" in err
    after = _state(out.parent)
    assert {k: after[k] for k in before} == before  # the older good export, byte for byte
    assert sorted(set(after) - set(before)) == ["m.failed.onnx", "m.failed.onnx.json"]  # no temporary, no lock
    report = loads_strict((out.parent / "m.failed.onnx.json").read_text())
    assert report["status"] == "verification_failed" and report["artifact"]["path"] == str(out.parent / "m.failed.onnx")
    assert report["artifact"]["sha256"] == after["m.failed.onnx"]
    assert export_main([str(good), "-o", str(out), "--eval-limit", "8"]) == 0
    assert sorted(_state(out.parent)) == ["m.onnx", "m.onnx.json"]  # a pass removes the failed copies


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupt_during_verify_leaves_the_destination_as_it_was(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, signum: int, code: int
) -> None:
    out = _older_good_export(tmp_path, tmp_path_factory)
    before = _state(tmp_path)
    proc = _slow_export(exported(tmp_path_factory.getbasetemp())["onnx"], out)
    _wait_for(proc, "[verify]")
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    assert _state(tmp_path) == before  # no new artifact, no temporary, no lock file


@pytest.mark.slow
def test_sigkill_leaves_only_temporaries_which_the_next_run_removes(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = _older_good_export(tmp_path, tmp_path_factory)
    before = _state(tmp_path)
    proc = _slow_export(exported(tmp_path_factory.getbasetemp())["onnx"], out)
    _wait_for(proc, "[verify]")
    proc.kill()
    proc.wait(timeout=60)
    left = _state(tmp_path)
    assert {k: left[k] for k in before} == before
    assert all(n.endswith((".tmp", ".lock")) and n.startswith(".") for n in set(left) - set(before)), left
    good = tiny_onnx(tmp_path / "good.onnx")
    assert export_main([str(good), "-o", str(out), "--eval-limit", "8"]) == 0  # the dead run's lock does not block
    assert sorted(_state(tmp_path)) == ["good.onnx", "out.onnx", "out.onnx.json"]


@pytest.mark.slow
def test_concurrent_runs_to_one_output_one_wins_whole_the_other_is_busy(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    digits = exported(tmp_path_factory.getbasetemp())["onnx"]
    out = tmp_path / "out.onnx"
    first = _slow_export(digits, out, images=100)
    _wait_for(first, "[load]")  # the first run holds the output from before it loads anything
    good = tiny_onnx(tmp_path / "good.onnx")
    assert export_main([str(good), "-o", str(out), "--eval-limit", "8"]) == 2
    err = capsys.readouterr().err
    assert f"output {out} is busy" in err and len([ln for ln in err.splitlines() if "error:" in ln]) == 1
    assert first.wait(timeout=300) == 0
    report = loads_strict(out.with_name("out.onnx.json").read_text())
    assert report["artifact"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert report["input"]["path"] == str(digits)  # the winner's artifact and the winner's report
    assert sorted(_state(tmp_path)) == ["good.onnx", "out.onnx", "out.onnx.json"]


@pytest.mark.slow
def test_a_full_disk_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    good = tiny_onnx(tmp_path / "good.onnx")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an older good export")
    out.with_name("m.onnx.json").write_text('{"status": "ok"}')
    before = _state(tmp_path)
    code = "import sys; from ghost_deploy.cli.main import export_main; sys.exit(export_main(sys.argv[1:]))"
    proc = run_limited(code, str(good), "-o", str(out), "--eval-limit", "4", file_size=600)  # files of <= 600 B
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"cannot write {out}" in errors[0] and "free some space" in errors[0]
    assert _state(tmp_path) == before


def test_non_finite_weights_of_an_onnx_source_are_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tiny_onnx(tmp_path / "nan.onnx", poison=float("nan"))
    out = tmp_path / "m.onnx"
    assert export_main([str(broken), "-o", str(out)]) == 2
    assert "non-finite weights (NaN or Inf) in 1 initializers: fc" in capsys.readouterr().err
    assert export_main([str(broken), "-o", str(out), "--allow-nonfinite-weights", "--eval-limit", "8"]) == 4
    assert "the reference gave" in capsys.readouterr().err and not out.exists()
    metrics = loads_strict((tmp_path / "m.failed.onnx.json").read_text())["verification"]["metrics"]
    assert metrics["nonfinite"]["candidate"]["classes"] == [3] and metrics["cosine_min"] is None


@pytest.mark.slow
def test_a_failed_precision_preview_records_where_it_diverges(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # entropy ranges clip the shipped model's input (DESIGN fact 7): the stem Conv is where the preview turns
    digits = exported(tmp_path_factory.getbasetemp())["onnx"]
    out = tmp_path / "m.onnx-int8.onnx"
    args = ["--target", "onnx-int8", "--calib-method", "entropy", "--calib-size", "64", "--eval-limit", "64"]
    assert export_main([str(digits), *args, "-o", str(out), "--eval", str(DIGITS / "test")]) == 4
    capsys.readouterr()
    report = loads_strict((tmp_path / "m.onnx-int8.failed.onnx.json").read_text())
    preview = report["precision_verification"]
    assert not preview["passed"] and preview["tolerances"]["min_cosine"] == 0.99
    found = preview["first_divergence"]
    assert found["node"] == "/conv_stem/Conv" and found["op_type"] == "Conv"
    assert found["cosine_mean"] < found["min_cosine"] == 0.99 and found["samples"] == 8
    per_class = preview["metrics"]["per_class"]
    assert len(per_class["samples"]) == 10 and sum(per_class["samples"]) == 64
    assert preview["metrics"]["misclassified"]  # the clipped model gets some of them wrong, named
