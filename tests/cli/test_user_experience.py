"""What a new user meets (issue 15): progress on standard error only, --quiet, errors before the slow work,
file names that say what they are, one-line usage errors, help on every option, honest summaries."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from ghost_deploy.cli.main import COMMANDS, build_export_parser, build_parser
from ghost_deploy.report import Steps
from tests.helpers import DIGITS, TINY_MODEL, run_cli

FAST = ["--eval-limit", "16"]


def test_progress_counts_and_estimates_on_the_echo_only() -> None:
    lines: list[str] = []
    steps = Steps(echo=lines.append)
    with steps.progress("verify", 8) as tick:
        steps_bar = tick.__self__  # type: ignore[attr-defined]
        steps_bar.start -= 10  # as if the work had run for 10 s: the threshold for showing progress is 1 s
        for done in range(1, 9):
            tick(done)
    assert lines == [
        "[verify] 2/8 inputs (25%), about 30 s left",
        "[verify] 4/8 inputs (50%), about 10 s left",
        "[verify] 6/8 inputs (75%), about 3 s left",
    ]
    quiet: list[str] = []
    with Steps(echo=quiet.append, quiet=True).progress("verify", 8) as tick:
        tick(8)
    assert quiet == []


@pytest.mark.slow
def test_json_output_is_only_json_and_progress_only_on_stderr(tmp_path: Path) -> None:
    proc = run_cli("ghost-export", str(TINY_MODEL), "-o", str(tmp_path / "m.onnx"), "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # nothing else on standard output
    assert report["status"] == "ok" and "[verify]" in proc.stderr and "[load]" in proc.stderr


@pytest.mark.slow
def test_quiet_drops_progress_and_summary_but_not_errors(tmp_path: Path) -> None:
    proc = run_cli("ghost-export", str(TINY_MODEL), "-o", str(tmp_path / "m.onnx"), "--quiet", *FAST)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert (tmp_path / "m.onnx").is_file()
    failed = run_cli("ghost-export", str(tmp_path / "missing.pt"), "--quiet")
    assert failed.returncode == 2 and "does not exist" in failed.stderr


@pytest.mark.slow
def test_errors_come_before_the_export(tmp_path: Path) -> None:
    missing = run_cli("ghost-export", str(TINY_MODEL), "--target", "onnx-int8", "--calib", str(tmp_path / "no"))
    assert missing.returncode == 2 and "--calib" in missing.stderr and "[load]" not in missing.stderr
    lonely = tmp_path / "elsewhere.pt"  # its metadata's calibration split does not resolve from here
    shutil.copyfile(TINY_MODEL, lonely)
    proc = run_cli("ghost-export", str(lonely), "--target", "onnx-int8", "-o", str(tmp_path / "q.onnx"))
    assert proc.returncode == 2 and "needs calibration data" in proc.stderr
    assert "[export]" not in proc.stderr  # found after loading the checkpoint, before exporting it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.pt"]


@pytest.mark.slow
def test_default_file_names_say_what_they_are(tmp_path: Path) -> None:
    model = tmp_path / "digits.pt"
    shutil.copyfile(TINY_MODEL, model)
    assert run_cli("ghost-export", str(model), *FAST).returncode == 0
    assert (tmp_path / "digits.onnx").is_file() and not (tmp_path / "digits.onnx.onnx").exists()
    again = run_cli("ghost-export", str(tmp_path / "digits.onnx"), *FAST)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "digits.simplified.onnx").is_file()  # the source is never overwritten
    data = ["--calib", str(DIGITS / "calibration"), "--calib-size", "16", "--eval", str(DIGITS / "test")]
    proc = run_cli("ghost-export", str(model), "--target", "onnx-int8", *data, "--eval-limit", "32")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "digits.onnx-int8.onnx").is_file() and (tmp_path / "digits.onnx-int8.onnx.cache").is_file()


@pytest.mark.parametrize(
    "argv", [["x.pt", "--target", "nope"], ["x.pt", "--dynamic-batch", "1:2:x:4"], ["x.pt", "--batch", "0"]]
)
def test_usage_errors_are_one_line(argv: list[str]) -> None:
    proc = run_cli("ghost-export", *argv)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "usage:" not in proc.stderr


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = [(parser.prog, a) for a in parser._actions if a.option_strings and a.dest != "help"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options(sub)
    return found


def test_every_option_has_help_and_every_command_its_own_exit_codes() -> None:
    missing = [f"{prog} {a.option_strings[0]}" for prog, a in _options(build_parser()) + _options(build_export_parser())
               if not a.help]  # fmt: skip
    assert missing == []
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "  4  " not in sub.choices["inspect"].epilog and "  4  " in sub.choices["run"].epilog
    assert {name for name, *_ in COMMANDS} >= {"export", "build", "verify", "profile", "pack", "run", "report"}
    assert "--auto-exclude" not in sub.choices["sensitivity"].format_help()  # export-only options stay there


@pytest.mark.slow
def test_reports_record_the_command_once_and_verify_names_only_what_it_wrote(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    assert run_cli("ghost-export", str(TINY_MODEL), "-o", str(onnx_path), *FAST).returncode == 0
    assert json.loads(onnx_path.with_name("m.onnx.json").read_text())["command"][:2] == [
        "ghost-export",
        str(TINY_MODEL),
    ]
    profile = run_cli("profile", str(onnx_path), "--duration-s", "0.05", "--warmup-ms", "5", "--layer-runs", "0")
    assert profile.returncode == 0, profile.stderr
    recorded = json.loads(onnx_path.with_name("m.onnx.profile.json").read_text())["command"]  # the default -o
    assert recorded[:3] == ["ghost-deploy", "profile", str(onnx_path)]
    plain = run_cli("verify", str(onnx_path), "--reference", str(TINY_MODEL), *FAST)
    assert plain.returncode == 0 and "report:" not in plain.stdout
    out = tmp_path / "v.json"
    written = run_cli("verify", str(onnx_path), "--reference", str(TINY_MODEL), "-o", str(out), *FAST)
    assert f"report: {out}" in written.stdout and out.is_file()


def test_the_summary_names_the_layers_auto_exclude_kept() -> None:
    from ghost_deploy.cli.summary import summary

    auto = {"excluded": ["/blocks.0/ghost2/Conv", "/conv_stem/Conv"], "met": True, "min_agreement": 0.99}
    text = summary({"target": "onnx-int8", "precision": {"calibration": {"auto_exclude": auto}}})
    assert "2 layers kept in higher precision" in text
    assert (
        "kept in higher precision: /blocks.0/ghost2/Conv" in text
        and "kept in higher precision: /conv_stem/Conv" in text
    )
