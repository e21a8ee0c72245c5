"""One list of the commands that would measure what the page shows as "not measured", with real file names.

A command is suggested only where every name in it is known: the artifact's path as it was given to
`ghost-deploy report` (an artifact inside an archive has none), the build script its engine report names, the
calibration and evaluation folders the reports record. What cannot be had that way (labelled images nobody
recorded) is said in words, never as a command with a placeholder.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ghost_deploy.view.data import Page, Target
from ghost_deploy.view.svg import esc
from ghost_deploy.view.verdict import baseline

LAYER_RUNS = 20  # profile's default


def _simulator_prefix(t: Target) -> str:
    """`GHOST_DEPLOY_SIMULATE_TRT=10.3 ` for a simulated engine, so the command runs where it was made."""
    if not (t.simulated and t.tensorrt):
        return ""
    return "GHOST_DEPLOY_SIMULATE_TRT=" + ".".join(t.tensorrt.split(" ")[0].split(".")[:2]) + " "


def _profiles(targets: Sequence[Target]) -> list[tuple[str, str]]:
    """Profile every usable target that has no profile (or no per-layer table); build every planned engine."""
    out = []
    for t in targets:
        if t.role != "target" or t.path is None:
            continue
        if t.not_built:
            if t.build_script:
                out.append((f"bash {shlex.quote(t.build_script)}", f"on the device: builds {t.file} ({t.not_built})"))
                after = f"on the device, after the build: {t.file}'s latency"
                out.append((f"ghost-deploy profile {shlex.quote(t.path)}", after))
            continue
        run = t.profile.runs[0] if t.profile and t.profile.runs else None
        if run is None:
            cmd = f"{_simulator_prefix(t)}ghost-deploy profile {shlex.quote(t.path)}"
            out.append((cmd, f"latency of {t.file} (writes {Path(t.path).name}.profile.json, read from beside it)"))
        elif run.layers is None and t.kind == "onnx":
            cmd = f"ghost-deploy profile {shlex.quote(t.path)} --layer-runs {LAYER_RUNS}"
            out.append((cmd, f"the slowest layers of {t.file}"))
    return out


def _sensitivity(page: Page) -> tuple[list[tuple[str, str]], list[str]]:
    """Rank the INT8 layers when an INT8 target is on the page and no ranking is; the file it writes."""
    int8 = [t for t in page.targets if t.role != "build" and t.target in ("onnx-int8", "ort-int8")]
    if page.rankings or not int8:
        return [], []
    worst = next((t for t in int8 if t.passed is False), int8[0])
    base = baseline(page.targets)
    model = base.path if base is not None and base.path else worst.source_model
    if model is None:
        return [], []
    out = str(Path(model).with_name(Path(model).stem + ".sensitivity.json"))
    calib = f" --calib {shlex.quote(worst.calibration)}" if worst.calibration else ""
    cmd = f"ghost-deploy sensitivity {shlex.quote(model)} --target {worst.target}{calib} -o {shlex.quote(out)}"
    return [(cmd, "which layers cost the most when quantized (the INT8 sensitivity ranking)")], [out]


def _labelled_root(targets: Sequence[Target]) -> str | None:
    """An evaluation folder a report recorded as labelled (its checks have per-class numbers)."""
    return next((c.data_root for t in targets for c in t.checks if c.per_class and c.data_root), None)


def _accuracy(targets: Sequence[Target]) -> tuple[list[tuple[str, str]], list[str]]:
    """Re-export targets whose top-1 was not measured with the labelled folder another report used; else say what
    is needed."""
    unmeasured = [t for t in targets if t.role == "target" and t.accuracy_check is not None and t.top1 is None]
    if not unmeasured:
        return [], []
    root = _labelled_root(targets)
    if root is None:
        return [], [
            "Top-1 accuracy and per-class accuracy need labelled images: give ghost-export --eval a folder with one "
            "sub-folder per class, named as the model's labels."
        ]
    out = []
    for t in unmeasured:
        if t.command:  # the export's own command line (its size, labels, calibration, gates), with --eval
            cmd = shlex.join(_with_option(t.command, "--eval", root))
        elif t.source_model and t.target:
            cmd = f"ghost-export {shlex.quote(t.source_model)} --target {t.target} --eval {shlex.quote(root)}"
        else:
            continue
        out.append((cmd, f"top-1 and per-class accuracy of {t.file} (run where it was exported)"))
    return out, []


def _with_option(command: Sequence[str], option: str, value: str) -> list[str]:
    """`command` with `option` set to `value` (an earlier `option X` or `option=X` dropped)."""
    out: list[str] = []
    skip = False
    for word in command:
        if skip:
            skip = False
        elif word == option:
            skip = True
        elif not word.startswith(option + "="):
            out.append(word)
    return [*out, option, value]


def _divergence(targets: Sequence[Target]) -> list[tuple[str, str]]:
    """Re-run the command of a failed check whose first diverging node was not located (an older report)."""
    out = []
    for t in targets:
        if t.command and any(c.passed is False and c.divergence is None for c in t.shown_checks):
            why = f"locates the first diverging node of {t.file} (run where it was exported)"
            out.append((shlex.join(t.command), why))
    return out


def commands(page: Page, output: str = "report.html") -> tuple[list[tuple[str, str]], list[str]]:
    """(command, what it measures) in order, the closing `ghost-deploy report` included; and sentences for what
    no command can fill."""
    ranked, extra = _sensitivity(page)
    accuracy, words = _accuracy(page.targets)
    todo = _profiles(page.targets) + ranked + accuracy + _divergence(page.targets)
    if todo and page.given:
        again = " ".join(shlex.quote(p) for p in [*page.given, *extra])
        todo.append((f"ghost-deploy report {again} -o {shlex.quote(output)}", "this page again, with the new figures"))
    return list(dict.fromkeys(todo)), words


def todo_section(page: Page, output: str = "report.html") -> str:
    """The section: the commands, each with what it fills in."""
    todo, words = commands(page, output)
    out = ['<section id="todo">', "<h2>To measure what is not measured</h2>"]
    if not todo and not words:
        out.append("<p>Nothing: every figure this page can show was measured.</p>")
    if todo:
        items = "".join(
            f'<li><code class="cmd">{esc(cmd)}</code><br><span class="note">{esc(why)}</span></li>' for cmd, why in todo
        )
        out.append(f'<ol class="commands">{items}</ol>')
    out += [f'<p class="note">{esc(w)}</p>' for w in words]
    out.append("</section>")
    return "\n".join(out)
