"""`ghost-deploy report` on real reports: every section holds what the JSON files say, nothing is fetched,
hostile strings stay text, bad input exits 2 naming the file, and every bundle carries its page."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ghost_deploy.bundle.runtime import MANIFEST, Bundle
from tests.helpers import TINY_MODEL, run_cli
from tests.view.parsed import ParsedPage, parse_page

SIM = {"GHOST_DEPLOY_SIMULATE_TRT": "10.3"}
QUICK_PROFILE = ("--duration-s", "0.2", "--warmup-ms", "20", "--layer-runs", "3")
SECTIONS = ["verdict", "targets", "todo", "model", "classes", "latency", "layers", "sensitivity", "verification"]


def _ok(*args: str, env: dict[str, str] | None = None) -> None:
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny trained GhostNet as FP32 and onnx-int8 ONNX, a simulated trt-fp16 engine, profiles and a ranking."""
    d = tmp_path_factory.mktemp("report")
    fp32, int8, engine, sens = d / "tiny.onnx", d / "tiny.onnx-int8.onnx", d / "tiny.trt-fp16.engine", d / "sens.json"
    _ok("ghost-export", str(TINY_MODEL), "--eval-limit", "32", "-o", str(fp32))
    calib = ("--calib-method", "minmax", "--calib-size", "16")
    _ok("ghost-export", str(fp32), "--target", "onnx-int8", *calib, "--eval-limit", "32", "-o", str(int8))
    _ok("ghost-export", str(fp32), "--target", "trt-fp16", "--eval-limit", "32", "-o", str(engine), env=SIM)
    _ok("profile", str(fp32), *QUICK_PROFILE, "-o", str(d / "tiny.onnx.profile.json"))
    _ok("profile", str(engine), *QUICK_PROFILE, "-o", str(d / "tiny.trt-fp16.engine.profile.json"), env=SIM)
    _ok("sensitivity", str(fp32), *calib, "-o", str(sens))
    return {"fp32": fp32, "int8": int8, "engine": engine, "sens": sens}


def _report(*inputs: Path, out: Path) -> tuple[str, ParsedPage]:
    proc = run_cli("report", *map(str, inputs), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text(encoding="utf-8")
    return html, parse_page(html)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _shown_size(path: Path) -> str:
    """A file's size as the page writes it: decimal MB, kB under 1 MB (an INT8 file of the tiny model is 0.7 MB)."""
    n = path.stat().st_size
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@pytest.mark.slow
def test_the_page_shows_what_the_reports_say(made: dict[str, Path], tmp_path: Path) -> None:
    html, page = _report(made["fp32"], made["int8"], made["engine"], made["sens"], out=tmp_path / "r.html")
    assert list(page.sections) == SECTIONS
    fp32, int8, engine = (_json(made[k].with_name(made[k].name + ".json")) for k in ("fp32", "int8", "engine"))
    model = fp32["model"]
    assert isinstance(model, dict) and model["arch"] in page.sections["model"]
    assert "0.305" in page.sections["model"] and "1 x 3 x 32 x 32" in page.sections["model"]
    for name, report, key in (("fp32", fp32, "verification"), ("int8", int8, "precision_verification")):
        metrics = report[key]["metrics"]
        file = made[name].name
        assert page.cells[(file, "top1")] == f"{metrics['candidate_top1']:.2%}"
        assert page.cells[(file, "agreement")] == f"{metrics['top1_agreement']:.2%}"
        assert page.cells[(file, "size")] == _shown_size(made[name])
        assert page.cells[(file, "verdict")] == "PASSED"
    engine_metrics = engine["verification"]["metrics"]
    assert page.cells[(made["engine"].name, "agreement")] == f"{engine_metrics['top1_agreement']:.2%}"
    profile = _json(made["fp32"].with_name("tiny.onnx.profile.json"))
    result = profile["results"][0]
    assert page.cells[(made["fp32"].name, "median")] == f"{result['latency_ms']['median']:.3f} ms"
    assert page.cells[(made["fp32"].name, "p99")] == f"{result['latency_ms']['p99']:.3f} ms"
    assert page.cells[(made["int8"].name, "median")] == "not measured"
    hist, trace = page.charts["latency"][:2]
    assert hist.counted == len(result["queries"]["latency_ms"]) and hist.marks == 2
    assert trace.points == len(result["queries"]["latency_ms"]) + len(result["queries"]["warmup_latency_ms"])
    slowest = result["layers"]["layers"][0]
    assert f"{slowest['ms_per_run']:.4f}" in page.sections["layers"]
    assert (slowest["onnx_nodes"] or [slowest["kernel"]])[0] in page.sections["layers"]
    ranking = _json(made["sens"])["sensitivity"]["layers"]
    (chart,) = page.charts["sensitivity"]
    assert chart.bars == min(20, len(ranking)) and any(ranking[0]["node"] in t for t in chart.texts)
    assert "PASSED" in page.sections["verification"] and "tensorrt" in page.sections["verification"]
    assert "http://" not in html and "https://" not in html and "<script" not in html.lower()


@pytest.mark.slow
def test_simulated_figures_are_labelled_and_real_ones_are_not(made: dict[str, Path], tmp_path: Path) -> None:
    html, page = _report(made["engine"], made["fp32"], out=tmp_path / "r.html")
    engine, fp32 = made["engine"].name, made["fp32"].name
    assert "SIMULATED" in page.cells[(engine, "median")] and "SIMULATED" in page.cells[(engine, "p99")]
    assert "SIMULATED" not in page.cells[(fp32, "median")]
    assert "GHOST_DEPLOY_SIMULATE_TRT" in html  # the banner says where the figures come from
    _, real_only = _report(made["fp32"], out=tmp_path / "real.html")
    assert "SIMULATED" not in "".join(real_only.sections.values())


@pytest.mark.slow
def test_a_hostile_report_stays_text(made: dict[str, Path], tmp_path: Path) -> None:
    hostile = '</code><script>alert("x")</script><img src=x onerror=alert(1)>'
    src = made["fp32"]
    art = tmp_path / "evil.onnx"
    shutil.copyfile(src, art)
    report = _json(src.with_name(src.name + ".json"))
    report["model"] = {**report["model"], "arch": hostile, "labels": [hostile]}
    report["verification"]["failures"] = [hostile]
    report["verification"]["first_divergence"] = {"node": hostile, "op_type": "Conv"}
    report["verification"]["metrics"]["misclassified"] = [{"name": hostile, "label": 0, "candidate": 1}]
    (tmp_path / "evil.onnx.json").write_text(json.dumps(report))
    html, page = _report(art, out=tmp_path / "r.html")
    assert "<script" not in html and not re.search(r'<img(?! src="data:image/png;base64,[A-Za-z0-9+/=]+")', html)
    assert "&lt;script&gt;" in html and hostile in page.sections["verification"] and hostile in page.sections["classes"]


@pytest.mark.slow
def test_every_bundle_carries_its_page_and_report_reads_bundles(made: dict[str, Path], tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    _ok("pack", str(made["fp32"]), str(made["int8"]), "-o", str(bundle))
    with Bundle.open(bundle) as opened:  # verified: report.html is listed with its sha256
        files = {f["path"]: f["role"] for f in opened.manifest["files"]}
        page = parse_page((opened.root / "report.html").read_text(encoding="utf-8"))
    assert files["report.html"] == "report"
    assert list(page.sections) == SECTIONS
    assert page.cells[(made["fp32"].name, "median")].endswith(" ms")  # the profile beside the packed file
    assert page.cells[(made["int8"].name, "size")] == _shown_size(made["int8"])
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in page.sections["model"]  # the labels, from the packed reports
    _, again = _report(bundle, out=tmp_path / "again.html")
    assert again.cells[(made["int8"].name, "top1")] == page.cells[(made["int8"].name, "top1")]
    assert not any("ghost-report-" in c for c in again.commands)  # no file of the temporary extraction is named
    folder = tmp_path / "dir"
    _ok("pack", str(made["fp32"]), "-o", str(folder))
    assert (folder / "report.html").is_file() and "report.html" in (folder / MANIFEST).read_text()
    (folder / "report.html").write_text("changed")
    proc = run_cli("report", str(folder), "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 2 and "report.html" in proc.stderr and not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_the_listed_commands_run_and_fill_what_was_not_measured(made: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    for key in ("fp32", "int8"):  # the FP32 profile comes along; the INT8 one and a ranking are missing
        for suffix in ("", ".json", ".profile.json"):
            src = made[key].with_name(made[key].name + suffix)
            if src.is_file():
                shutil.copyfile(src, folder / src.name)
    _, page = _report(folder / made["fp32"].name, folder / made["int8"].name, out=tmp_path / "r.html")
    int8 = made["int8"].name
    assert page.cells[(int8, "median")] == "not measured" and not page.charts.get("sensitivity")
    assert page.commands[-1].startswith("ghost-deploy report ")
    for command in page.commands:
        program, *args = shlex.split(command)
        proc = run_cli(*(["ghost-export"] if program == "ghost-export" else []), *args)
        assert proc.returncode == 0, (command, proc.stderr)
    filled = parse_page((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert filled.cells[(int8, "median")].endswith(" ms") and filled.charts["sensitivity"][0].bars > 0
    assert filled.commands == [] and "Nothing" in filled.sections["todo"]


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "lonely.onnx").write_bytes(b"no report beside")
    (tmp_path / "not-ours.json").write_text(json.dumps({"hello": "world"}))
    for bad in ("missing.onnx", "list.json", "lonely.onnx", "not-ours.json", "missing-bundle.tar.gz"):
        out = tmp_path / "r.html"
        proc = run_cli("report", str(tmp_path / bad), "-o", str(out))
        assert proc.returncode == 2, (bad, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and bad in lines[0], (bad, proc.stderr)
        assert not out.exists()


def test_help_names_the_inputs_and_imports_no_model_runtime() -> None:
    probe = (
        "import contextlib, io, sys\n"
        "from ghost_deploy.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['report', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'onnx', 'onnxruntime', 'torch', 'tensorrt'})\n"
        "print(heavy, out.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("[] ") and "ARTIFACT_OR_BUNDLE" in proc.stdout and "report.html" in proc.stdout
