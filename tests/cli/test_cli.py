"""The command line as a user meets it: exit codes, one-line errors, no partial files, no torch needed."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.helpers import NO_TORCH, run_cli


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, small_checkpoint: Path) -> Path:
    """The small checkpoint exported once through the CLI (also checks the happy path)."""
    out = tmp_path_factory.mktemp("exp") / "small.onnx"
    proc = run_cli(
        "ghost-export", str(small_checkpoint), "--input-size", "64", "-o", str(out), "--dynamic-batch", "1:4:8"
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_export_writes_a_checked_onnx_and_its_report(exported: Path) -> None:
    onnx.checker.check_model(onnx.load(str(exported)), full_check=True)
    report = json.loads(Path(str(exported) + ".json").read_text())
    assert report["status"] == "ok"
    metrics = report["verification"]["metrics"]
    assert report["verification"]["passed"] and metrics["relative_error"] < 1e-5
    assert report["verification"]["data"]["kind"] == "fallback"
    assert "no image of the user's was used" in report["verification"]["data"]["note"]
    assert report["graph"]["ops_before"]["Slice"] == 32 and "Slice" not in report["graph"]["ops_after"]
    assert report["versions"]["onnxruntime"] and report["versions"]["torch"]
    assert report["input"]["sha256"] and report["artifact"]["sha256"]
    assert {s["name"] for s in report["steps"]} >= {"load", "export", "simplify", "verify"}
    assert report["io"]["inputs"][0] == {"name": "input", "shape": [-1, 3, 64, 64], "dtype": "float32"}


@pytest.mark.slow
def test_json_prints_only_the_report_on_stdout(tmp_path: Path, small_checkpoint: Path) -> None:
    proc = run_cli(
        "ghost-export",
        str(small_checkpoint),
        "--input-size",
        "64",
        "-o",
        str(tmp_path / "m.onnx"),
        "--json",
        "--eval-limit",
        "4",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["artifact"]["path"] == str(tmp_path / "m.onnx")
    assert "[verify]" in proc.stderr  # progress goes to the terminal, not into the JSON


@pytest.mark.slow
def test_default_output_name_is_beside_the_model(tmp_path: Path, small_checkpoint: Path) -> None:
    model = tmp_path / "net.pt"
    model.write_bytes(small_checkpoint.read_bytes())
    proc = run_cli("ghost-export", str(model), "--input-size", "64", "--eval-limit", "4")
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path) == {"net.pt", "net.onnx", "net.onnx.json"}


@pytest.mark.slow
def test_onnx_input_never_imports_torch(tmp_path: Path, exported: Path) -> None:
    code = NO_TORCH + "from ghost_deploy.cli.main import export_main; sys.exit(export_main())"
    out = tmp_path / "again.onnx"
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code, str(exported), "-o", str(out), "--eval-limit", "8"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(str(out) + ".json").read_text())
    assert report["verification"]["reference"].startswith("onnxruntime")
    assert report["model"]["input_size"] == 64  # taken from the input's own report


def test_help_works_without_torch() -> None:
    import subprocess

    for entry in ("main", "export_main"):
        code = NO_TORCH + f"from ghost_deploy.cli.main import {entry}; sys.exit({entry}(['--help']))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0 and "exit codes" in proc.stdout and "4  a verification" in proc.stdout


@pytest.mark.slow
def test_missing_torch_exits_3_naming_the_extra(tmp_path: Path, small_checkpoint: Path) -> None:
    import subprocess

    code = NO_TORCH + "from ghost_deploy.cli.main import export_main; sys.exit(export_main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(small_checkpoint), "-o", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert "ghost-deploy[export]" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(tmp_path) == set()


def _bad_inputs(tmp: Path, small_checkpoint: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "text.pt").write_text("just some text\n")
    (tmp / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    data = small_checkpoint.read_bytes()
    (tmp / "cut.pt").write_bytes(data[: len(data) // 3])

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp / 'PWNED'}",))

    (tmp / "evil.pt").write_bytes(pickle.dumps({"state_dict": Evil()}))
    import torch

    torch.save(torch.nn.Linear(3, 3).state_dict(), tmp / "linear.pt")
    (tmp / "empty_eval").mkdir()
    (tmp / "empty_eval" / "readme.txt").write_text("no images here")
    (tmp / "afile").write_text("x")
    ck = str(small_checkpoint)
    return {
        "missing path": ([str(tmp / "nope.pt")], "does not exist"),
        "text file": ([str(tmp / "text.pt")], "not a PyTorch checkpoint"),
        "random bytes": ([str(tmp / "random.pt")], "not a PyTorch checkpoint"),
        "truncated": ([str(tmp / "cut.pt")], "truncated or corrupt"),
        "malicious pickle": ([str(tmp / "evil.pt")], "--trust-checkpoint"),
        "other architecture": ([str(tmp / "linear.pt")], "not a GhostNet state_dict"),
        "size not /32": ([ck, "--input-size", "100"], "not a multiple of 32"),
        "eval without images": ([ck, "--input-size", "64", "--eval", str(tmp / "empty_eval")], "no image in"),
        "unwritable output": ([ck, "--input-size", "64", "-o", str(tmp / "afile" / "m.onnx")], "is a file"),
    }


@pytest.mark.slow
def test_every_bad_input_exits_2_with_one_line_and_no_file(tmp_path: Path, small_checkpoint: Path) -> None:
    cases = _bad_inputs(tmp_path, small_checkpoint)
    before = _files(tmp_path)
    for name, (args, message) in cases.items():
        proc = run_cli("ghost-export", *args, cwd=tmp_path)
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}: {proc.stderr}"
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ghost-export: error:")]
        assert len(errors) == 1 and message in errors[0], f"{name}: {proc.stderr}"
        assert "Traceback" not in proc.stderr, name
    assert _files(tmp_path) == before, "a failed run left a file behind"
    assert not (tmp_path / "PWNED").exists()


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_cli("ghost-export", str(tmp_path / "nope.pt"), "-v")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_failed_verification_exits_4_names_the_node_and_keeps_the_report(
    tmp_path: Path, small_checkpoint: Path, exported: Path
) -> None:
    from onnx import numpy_helper

    model = onnx.load(str(exported))
    node = next(n for n in model.graph.node if n.op_type == "Conv" and "blocks.2" in n.name)
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2.0, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    report = tmp_path / "verify.json"
    proc = run_cli("verify", str(bad), "--reference", str(small_checkpoint), "--input-size", "64", "-o", str(report))
    assert proc.returncode == 4, proc.stderr
    assert "verification failed: max abs error" in proc.stderr and node.name in proc.stderr
    saved = json.loads(report.read_text())
    assert saved["verification"]["passed"] is False
    assert saved["verification"]["first_divergence"]["node"] == node.name


@pytest.mark.slow
def test_verify_passes_on_the_good_export(exported: Path, small_checkpoint: Path) -> None:
    proc = run_cli("verify", str(exported), "--reference", str(small_checkpoint), "--input-size", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verification"]["passed"] is True


@pytest.mark.slow
def test_eval_folder_with_class_folders_gives_accuracy(tmp_path: Path, small_checkpoint: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "eval" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(
                tmp_path / "eval" / cls / f"{i}.jpg"
            )
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["cat", "dog", *[f"c{i}" for i in range(8)]]) + "\n")
    out = tmp_path / "m.onnx"
    proc = run_cli(
        "ghost-export",
        str(small_checkpoint),
        "--input-size",
        "64",
        "--eval",
        str(tmp_path / "eval"),
        "--labels",
        str(labels),
        "-o",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    ver = json.loads(proc.stdout)["verification"]
    assert ver["data"]["kind"] == "user" and ver["data"]["images"] == 6 and ver["data"]["labelled"]
    assert ver["metrics"]["labelled_samples"] == 6 and "candidate_top1" in ver["metrics"]


@pytest.mark.slow
def test_export_with_pack_writes_a_bundle_that_opens(tmp_path: Path, small_checkpoint: Path) -> None:
    from ghost_deploy.bundle.runtime import Bundle

    bundle = tmp_path / "b.tar.gz"
    proc = run_cli(
        "ghost-export",
        str(small_checkpoint),
        "--input-size",
        "64",
        "-o",
        str(tmp_path / "m.onnx"),
        "--eval-limit",
        "4",
        "--pack",
        str(bundle),
    )
    assert proc.returncode == 0, proc.stderr
    opened = Bundle.open(bundle, extract_to=tmp_path / "x")
    assert opened.infer(np.zeros((1, 3, 64, 64), np.float32))


HELP_PROBE = """
import contextlib, io, json, sys
from ghost_deploy.cli.main import export_main, main
entry = export_main if sys.argv[1] == "ghost-export" else main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        entry(sys.argv[2:])
    except SystemExit:
        pass
print(json.dumps({"modules": sorted(sys.modules), "help": out.getvalue()}))
"""


@pytest.mark.parametrize(
    "command",
    [["ghost-export", "--help"], ["ghost-deploy", "--help"], ["ghost-deploy", "export", "--help"]]
    + [
        ["ghost-deploy", name, "--help"]
        for name in ("profile", "bench", "pack", "build", "doctor", "report", "sensitivity", "verify")
    ],
)
def test_help_is_cheap_it_imports_no_model_runtime(command: list[str]) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-c", HELP_PROBE, *command], capture_output=True, text=True, check=True)
    probe = json.loads(proc.stdout)
    assert "usage:" in probe["help"]
    heavy = {m.split(".")[0] for m in probe["modules"]} & {"onnx", "onnxruntime", "onnxsim", "torch", "tensorrt"}
    assert heavy == set(), f"{' '.join(command)} imported {sorted(heavy)}"
