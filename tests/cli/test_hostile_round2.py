"""Hostile input, round 2 (issue 22): flags without bounds, output that cannot be written, deep and non-UTF-8
folders, optional dependencies that cannot load. Each test runs what a user would run and checks what they see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ghost_deploy.cli.main import build_export_parser, build_parser
from ghost_deploy.errors import InputError
from ghost_deploy.profiling.profile import ProfileConfig
from ghost_deploy.profiling.stats import LoopConfig
from tests.helpers import tiny_onnx

HUGE = "1" * 5000


def _cli(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`python -m ghost_deploy ARGS` in a fresh process, killed at `timeout` (a hang fails the test, quickly)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kwargs.pop("env", {})}  # type: ignore[dict-item]
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    cmd = [sys.executable, "-m", "ghost_deploy", *args]
    return subprocess.run(cmd, text=True, env=env, timeout=timeout, **kwargs)  # type: ignore[call-overload,no-any-return]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str], export: bool = False) -> str:
    """The one-line usage error (exit 2) of parsing `argv`: refused before anything runs."""
    parser = build_export_parser() if export else build_parser()
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and len(err) < 400, err
    return err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--seed", "-1", "at least 0"),
        ("--seed", str(2**32), f"at most {2**32 - 1}"),
        ("--provider", "", "provider names"),
        ("--provider", " , ", "provider names"),
        ("--threads", "1000000", "at most"),
        ("--threads", "0", "at least 1"),
        ("--cv-threshold", "nan", "finite"),
        ("--cv-threshold", "inf", "finite"),
        ("--cv-threshold", "0", "finite number > 0"),
        ("--cv-threshold", "101", "<= 100"),
        ("--duration-s", "1e300", "<= 3600"),
        ("--duration-s", "nan", "finite"),
        ("--warmup-ms", "1e300", "<= 3.6e+06"),
        ("--warmup-ms", "-1", ">= 0"),
        ("--iterations", "100000000000", "at most 1000000"),
        ("--layer-runs", "100000000000", "at most 1000000"),
        ("--layer-runs", "-1", "at least 0"),
        ("--top", "-1", "at least 0"),
        ("--seed", HUGE, "expected an integer"),
        ("--duration-s", HUGE, "must be a finite number"),
    ],
)
def test_profile_flags_are_bounded(flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["profile", "m.onnx", flag, value], capsys)
    assert flag in err and says in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--batch", "100000000"), ("--threads", "1000000"), ("--duration-s", "1e300"), ("--warmup-ms", "inf"),
     ("--iterations", "100000000000"), ("--eval-limit", "1e300"), ("--calib-size", "0")],
)  # fmt: skip
def test_bench_flags_are_bounded(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert flag in _usage_error(["bench", "m.pt", flag, value], capsys)


@pytest.mark.parametrize("command", [["export", "m.pt"], ["build", "m.onnx", "--target", "trt-fp16"]])
def test_trt_version_of_5000_digits_is_a_usage_error(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error([*command, "--trt-version", f"{HUGE}.0"], capsys)
    assert "--trt-version" in err and "MAJOR.MINOR" in err


def test_numbers_too_long_are_not_repeated_whole(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["m.pt", "--eval-limit", HUGE], capsys, export=True)
    assert "expected an integer" in err


def test_the_library_bounds_what_the_flags_bound() -> None:
    for loop in ({"warmup_ms": 1e300}, {"duration_s": 1e300}, {"min_iterations": 10**12}):
        with pytest.raises(InputError):
            LoopConfig(**loop)  # type: ignore[arg-type]
    for cfg in ({"threads": 10**6}, {"seed": -1}, {"providers": ()}, {"cv_threshold": float("nan")},
                {"layer_runs": 10**12}):  # fmt: skip
        with pytest.raises(InputError):
            ProfileConfig(**cfg)  # type: ignore[arg-type]


def test_a_profile_of_1e300_seconds_ends_at_once(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    for flag, value in (("--duration-s", "1e300"), ("--threads", "1000000")):
        # before: still timing (or starting a million threads) at the timeout
        proc = _cli("profile", str(model), "--random-input", "--no-output", "--layer-runs", "0", flag, value)
        assert proc.returncode == 2 and flag in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["cache", "prune", "--older-than", "nan"], "--older-than"),  # before: accepted, removed nothing, exit 0
        (["cache", "prune", "--older-than", "inf"], "--older-than"),
        (["doctor", "--selftest", "--duration-s", "1e300"], "--duration-s"),
        (["run", "b.tar.gz", "x.png", "--top-k", "0"], "--top-k"),  # before: taken as 1, silently
    ],
)
def test_other_commands_numbers_are_bounded(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert says in _usage_error(argv, capsys)


def test_a_cache_size_of_400_digits_is_bad_input(tmp_path: Path) -> None:
    from ghost_deploy.backends.trt.cache_admin import parse_size

    with pytest.raises(InputError, match="--max-size"):  # before: OverflowError (exit 1)
        parse_size("9" * 400 + "G")


# Item 8: every write to the terminal is inside the error handling.

LABELS = ("chat 猫", "Ω omega", "naïve", "déjà", "🚀 rocket", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def unicode_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier with labels no ASCII terminal can show, exported and packed (a directory bundle)."""
    from ghost_deploy.bundle.pack import pack
    from ghost_deploy.config import ExportConfig, Overrides
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_onnx import export_model

    folder = tmp_path_factory.mktemp("unicode")
    cfg = ExportConfig(output=folder / "u.onnx", eval_limit=8, overrides=Overrides(labels=LABELS))
    result = export_model(tiny_onnx(folder / "src.onnx"), cfg, Steps(echo=lambda text: None))
    pack([result.artifact], folder / "b")
    return folder / "b"


def _commands(bundle: Path, tmp: Path) -> dict[str, list[str]]:
    onnx = next(bundle.glob("*.onnx"))
    image = sorted((Path(__file__).resolve().parents[2] / "calibration" / "digits" / "test").rglob("*.png"))[0]
    fast = ["--duration-s", "0.05", "--warmup-ms", "0", "--layer-runs", "0", "--no-output"]
    return {
        "export": ["export", str(tiny_onnx(tmp / "src.onnx")), "-o", str(tmp / "new.onnx"), "--eval-limit", "4"],
        "run": ["run", str(bundle), str(image)],
        "inspect": ["inspect", str(bundle)],
        "report": ["report", str(onnx), "-o", str(tmp / "r.html")],
        "verify": ["verify", str(onnx), "--reference", str(tiny_onnx(tmp / "ref.onnx")), "--eval-limit", "4"],
        "profile": ["profile", str(onnx), "--random-input", *fast],
        "help": ["--help"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "run", "inspect", "report", "verify", "profile", "help"])
def test_standard_output_on_a_full_disk(command: str, unicode_bundle: Path, tmp_path: Path) -> None:
    argv = _commands(unicode_bundle, tmp_path)[command]
    with open("/dev/full", "w") as full:  # before: exit 1 with a traceback (OSError: No space left on device)
        proc = _cli(*argv, stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ghost-deploy: error: cannot write to standard output: No space left on device"), last
    if command == "export":  # the work was done: the artifact is in place and the message says so
        assert (tmp_path / "new.onnx").is_file() and "files it writes are in place" in last


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "inspect", "report"])
def test_labels_an_ascii_terminal_cannot_show_are_escaped(command: str, unicode_bundle: Path, tmp_path: Path) -> None:
    argv = _commands(unicode_bundle, tmp_path)[command]
    proc = _cli(*argv, env={"PYTHONIOENCODING": "ascii"})  # before (run): UnicodeEncodeError, exit 1
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    if command == "run":
        assert "\\U0001f680 rocket" in proc.stdout or "\\u732b" in proc.stdout or "d\\xe9j\\xe0" in proc.stdout


@pytest.mark.slow
def test_standard_error_on_a_full_disk_does_not_stop_the_export(tmp_path: Path) -> None:
    src = tiny_onnx(tmp_path / "src.onnx")
    with open("/dev/full", "w") as full:  # before: the first progress line failed the job (exit 1, no artifact)
        proc = _cli("export", str(src), "-o", str(tmp_path / "new.onnx"), "--eval-limit", "4", stderr=full)
    assert proc.returncode == 0 and (tmp_path / "new.onnx").is_file()


# Item 9: names that are not UTF-8, from the export's --eval folder to the report page.


@pytest.mark.slow
def test_image_names_that_are_not_utf8_reach_the_report_page(tmp_path: Path) -> None:
    digits = Path(__file__).resolve().parents[2] / "calibration" / "digits" / "test"
    evals = os.fsencode(tmp_path / "eval")
    for cls in range(10):  # class folders named like the tiny model's classes, image names that are not UTF-8
        os.makedirs(os.path.join(evals, b"%d" % cls))
        for i, image in enumerate(sorted((digits / str(cls)).glob("*.png"))[:2]):
            shutil.copy(image, os.path.join(evals, b"%d" % cls, b"x\xff%d.png" % i))
    os.makedirs(os.path.join(evals, b"d\xff"))
    model = tmp_path / "m.onnx"
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{cls}\n" for cls in range(10)))
    src = str(tiny_onnx(tmp_path / "src.onnx"))
    export = _cli("export", src, "-o", str(model), "--eval", os.fsdecode(evals), "--labels", str(labels))
    assert export.returncode == 0, export.stderr  # before: UnicodeEncodeError hashing the file list (exit 1)
    page = tmp_path / "r.html"
    proc = _cli("report", str(model), "-o", str(page))
    assert proc.returncode == 0, proc.stderr  # before: UnicodeEncodeError writing the page (exit 1)
    assert "x\\xff" in page.read_text(encoding="utf-8")  # the names of the images it got wrong, shown


# Debatable, decided: torch that is installed but cannot load under a memory limit is exit 1, not 3 (not missing).

UNDER_A_LIMIT = """
import re, resource, sys
import numpy, onnx, onnxruntime, PIL.Image  # what the export loads before torch
from ghost_deploy.cli.main import export_main
size = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) << 10
limit = size + (64 << 20)  # far less than torch's shared libraries map
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(export_main(sys.argv[1:]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the address space size from /proc")
def test_torch_under_an_address_space_limit_is_exit_1_naming_the_limit(tmp_path: Path) -> None:
    from tests.helpers import TINY_MODEL

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", UNDER_A_LIMIT, str(TINY_MODEL), "-o", str(tmp_path / "m.onnx")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if not line.startswith("[")]
    # before: "unexpected error: ImportError: libtorch_cpu.so: failed to map segment from shared object"
    assert "needs 'torch', which is installed but could not be loaded" in line and "ulimit -v" in line, line
    assert "pip install" not in line  # reinstalling would not help


def test_a_package_that_is_not_installed_is_still_exit_3() -> None:
    from ghost_deploy import optional
    from ghost_deploy.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError) as caught:
        optional.require("ghost_deploy_no_such_package", "Testing")
    assert caught.value.exit_code == 3


def test_a_workspace_that_overflows_tensorrts_size_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["m.onnx", "--target", "trt-fp16", "--workspace", "99999999999999999999999"]
    assert "at most 1048576" in _usage_error(argv, capsys, export=True)  # before: accepted (simulated: exit 0)


def test_warnings_of_run_pack_and_tensorrt_on_a_full_standard_error_do_not_stop_the_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run`'s and `pack`'s warnings and TensorRT's log lines go through the one guarded writer: standard error on
    a full disk drops them (before: OSError, exit 1 after the work was done)."""
    from ghost_deploy.backends.trt import build
    from ghost_deploy.cli import bundle as cli_bundle
    from ghost_deploy.testing import trtsim

    with open("/dev/full", "w") as full, trtsim.simulate("10.3"):
        monkeypatch.setattr(sys, "stderr", full)
        cli_bundle._stderr("warning: a packed engine of another GPU")
        logger = build.keeping_logger()
        import tensorrt

        logger.log(tensorrt.ILogger.Severity.ERROR, "parser refused the node")
        assert logger.errors == ["parser refused the node"]
