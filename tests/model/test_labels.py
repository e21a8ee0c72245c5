"""Labels are one line of plain text each (issue 22, debatable item decided): a label with a control character
(a newline, a tab, a terminal escape) is refused at export, exit 2 naming the label's index and where it came
from; before, a newline in a label passed export, and `pack` then wrote a labels.txt with one line too many."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ghost_deploy.cli.main import export_main


@pytest.mark.parametrize(
    ("source", "label", "said"),
    [
        ("--labels", "\x1b[2Jcat", r"label 3 ('\x1b[2Jcat', from --labels) has a control character (U+001B)"),
        ("--labels", "cat\tdog", "label 3 ('cat\\tdog', from --labels) has a control character (U+0009)"),
        ("report", "a\nb", r"label 3 ('a\nb', from the ONNX's ghost-deploy report) has a control character (U+000A)"),
    ],
)
def test_a_label_with_a_control_character_is_refused_at_export(
    source: str,
    label: str,
    said: str,
    tiny_exports: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_exports["good"], model)
    labels = [str(i) for i in range(10)]
    labels[3] = label
    args = [str(model), "-o", str(tmp_path / "out.onnx"), "-q"]
    if source == "--labels":
        (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        args += ["--labels", str(tmp_path / "labels.txt")]
    else:  # the report beside an ONNX, which export reads as the model's description
        report = json.loads(tiny_exports["good"].with_name("tiny.onnx.json").read_text())
        report["model"]["labels"] = labels
        (tmp_path / "m.onnx.json").write_text(json.dumps(report))
    capsys.readouterr()
    assert export_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "out.onnx").exists()
