"""What the commands print is true and useful (issue 21, the smaller points): a closed pipe ends quietly, an
ONNX source is never said to be compared with itself, --pack says it wrote the bundle, a simulated engine says
SIMULATED and is profiled on the images its ONNX was, the exit-3 message names the `trt` extra, help texts
belong to their command, wrong files are named for what they are, and the docs cite code that exists."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ghost_deploy.cli.main import build_export_parser, build_parser
from ghost_deploy.machine import probe
from tests.cli.conftest import Cli
from tests.helpers import DIGITS, REPO, tiny_onnx

FAST = ["--eval-limit", "8"]
IMAGES = sorted((DIGITS / "test").rglob("*.png"))[:40]


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ghost_deploy ARGS` whose standard output is a pipe nobody reads any more (`| head` gone)."""
    read, write = os.pipe()
    os.close(read)  # closed before the command writes a byte: every write to it fails with EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "ghost_deploy", *args],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "argv",
    [["run", "{bundle}", *map(str, IMAGES), "--json"], ["inspect", "{bundle}"], ["run", "--help"], ["--version"]],
    ids=["run-json", "inspect", "help", "version"],
)
@pytest.mark.slow
def test_a_closed_standard_output_ends_quietly(tiny_bundle: Path, argv: list[str]) -> None:
    proc = _into_closed_pipe(*(a.format(bundle=tiny_bundle) for a in argv))
    assert proc.returncode == 0, proc.stderr
    # no BrokenPipeError, no "Exception ignored": at most the line that says which artifact runs
    assert all(line.startswith("runs: ") for line in proc.stderr.splitlines()), proc.stderr


def test_an_onnx_source_says_only_what_was_done(tiny_exports: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "again.onnx"
    proc = cli("ghost-export", str(tiny_exports["good"]), "-o", str(out), "--pack", str(tmp_path / "b.tar.gz"), *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.with_name("again.onnx.json").read_text())
    assert report["graph"]["unchanged"] and report["verification"]["self_comparison"]
    assert "FP32 ONNX: the input ONNX, unchanged, so not compared with itself; ran on 48 inputs" in proc.stdout
    assert "graph: 5 nodes, unchanged by simplification\n" in proc.stdout
    assert "max abs error 0.00e+00" not in proc.stdout + proc.stderr and "identity Slices" not in proc.stdout
    assert "comparing ONNX Runtime CPU with onnxruntime" not in proc.stderr
    assert "[verify] running the FP32 ONNX on ONNX Runtime CPU (the input ONNX unchanged" in proc.stderr
    assert not re.search(r"\b1 threads\b", proc.stderr)
    assert f"bundle written: {tmp_path / 'b.tar.gz'}" in proc.stdout  # --pack says what it wrote


@pytest.mark.skipif(probe.tensorrt_installed(), reason="TensorRT is installed: the engine is built instead")
def test_without_tensorrt_the_exit_3_message_names_the_trt_extra(tmp_path: Path, cli: Cli) -> None:
    proc = cli("ghost-export", str(tiny_onnx(tmp_path / "m.onnx")), "--target", "trt-fp32", *FAST)
    assert proc.returncode == 3
    assert "pip install 'ghost-deploy[trt]'" in proc.stderr.splitlines()[-1]


def test_a_simulated_engine_says_so_and_is_profiled_on_the_onnx_images(
    tiny_exports: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    from ghost_deploy.testing import trtsim

    engine = tmp_path / "m.engine"
    trtsim.uninstall()
    with trtsim.simulate("10.3"):
        proc = cli("ghost-export", str(tiny_exports["good"]), "--target", "trt-fp32", "-o", str(engine), *FAST)
        assert proc.returncode == 0, proc.stderr
        line = next(x for x in proc.stdout.splitlines() if "engine:" in x)
        assert line.startswith(f"SIMULATED engine: {engine}") and "TensorRT 10.3" in line and "no GPU" in line
        steps = [s["name"] for s in json.loads(engine.with_name("m.engine.json").read_text())["steps"]]
        assert steps.count("verify") == 1 and steps.count("verify-engine") == 1  # two steps, two names
        loop = ["--duration-s", "0.05", "--warmup-ms", "5", "--layer-runs", "0", "--no-output", "--json"]
        profiled = cli("profile", str(engine), *loop)
    assert profiled.returncode == 0, profiled.stderr
    assert json.loads(profiled.stdout)["results"][0]["inputs"]["kind"] == "images"  # as the ONNX, not random


def test_files_that_are_not_what_was_expected_are_named(tiny_bundle: Path, tmp_path: Path, cli: Cli) -> None:
    model = tiny_onnx(tmp_path / "model.onnx")
    onnx_as_bundle = cli("run", str(model), str(IMAGES[0]))
    assert onnx_as_bundle.returncode == 2 and "gzipped" not in onnx_as_bundle.stderr
    assert f"it is an ONNX model; pack it into one first: ghost-deploy pack {model}" in onnx_as_bundle.stderr
    text = tmp_path / "cat.jpg"
    text.write_text("a cat, sitting\n")
    text_as_image = cli("run", str(tiny_bundle), str(text))
    assert text_as_image.returncode == 2 and "BufferedReader" not in text_as_image.stderr
    assert "it is a text file (it starts with 'a cat, sitting'), not an image" in text_as_image.stderr


def _sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]  # type: ignore[no-any-return]


def test_help_shows_each_commands_own_exit_codes_and_every_argument_has_help() -> None:
    parser = build_parser()
    run_help = _sub(parser, "run").format_help()
    assert "4  the model gave NaN or Inf for an image" in run_help and "not moved into place" not in run_help
    assert "not moved into place" in build_export_parser().format_help()
    assert "IMAGE       image files" in run_help or re.search(r"IMAGE\s+image files", run_help)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [
        f"{name} {action.dest}"
        for name, sub in commands.items()
        for action in sub._actions
        if not action.option_strings and not action.help
    ]
    assert missing == []


@pytest.mark.skipif(probe.tensorrt_installed(), reason="TensorRT is installed here")
def test_doctor_without_tensorrt_points_at_the_simulator() -> None:
    from ghost_deploy.machine.doctor import diagnose, render

    text = render(diagnose())
    assert "set GHOST_DEPLOY_SIMULATE_TRT=10.3" in text and "labelled SIMULATED" in text


def test_the_docs_cite_functions_that_exist() -> None:
    cited = set()
    for doc in ("models/MODEL_CARD.md", "calibration/README.md", "README.md"):
        cited |= set(re.findall(r"`(ghost_deploy(?:\.\w+)+)", (REPO / doc).read_text()))
    assert "ghost_deploy.data.preprocess.preprocess_file" in cited
    for name in sorted(cited):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)  # AttributeError: the docs cite what does not exist
            break
        else:
            pytest.fail(f"{name} is cited but no part of it imports")
