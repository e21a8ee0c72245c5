"""The answer first: which target to use, how much faster and smaller than FP32 it is, and what failed.

The FP32 ONNX (`onnx` target) is the baseline every speed-up and size ratio is taken against. A speed-up is
given only where both were profiled at the same batch size; a SIMULATED latency (an engine run by ONNX Runtime
on the CPU) is never the fastest, since it says nothing about the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from ghost_deploy.view.data import Check, Target
from ghost_deploy.view.read import num
from ghost_deploy.view.svg import esc, short_node

MISSING = '<span class="missing">not measured</span>'
MAX_FAILURES = 3  # failure sentences quoted per failed target


def baseline(targets: Sequence[Target]) -> Target | None:
    """The FP32 ONNX the others are measured against (a profiled one first), or None when none was given."""
    fp32 = [t for t in targets if t.role == "target" and t.kind == "onnx" and t.precision == "fp32"]
    return next((t for t in fp32 if t.median is not None), fp32[0] if fp32 else None)


def _batch(t: Target) -> int | None:
    """The batch size of a target's first profiled run."""
    return t.profile.runs[0].batch if t.profile and t.profile.runs else None


def engine_baseline(targets: Sequence[Target]) -> Target | None:
    """A profiled FP32 engine (`trt-fp32`): what another engine's speed is better compared with."""
    return next((t for t in targets if t.role == "target" and t.target == "trt-fp32" and t.median is not None), None)


def speedup(t: Target, base: Target | None) -> float | None:
    """How many times faster than the FP32 ONNX (median against median, same batch), when both were profiled."""
    if base is None or t.median is None or base.median is None or t.median <= 0 or _batch(t) != _batch(base):
        return None
    return base.median / t.median


def size_ratio(t: Target, base: Target | None) -> float | None:
    """The file's size as a fraction of the FP32 ONNX's."""
    if base is None or t.bytes is None or not base.bytes:
        return None
    return t.bytes / base.bytes


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.2f} MB" if n is not None else "size not measured"


def _name(t: Target) -> str:
    what = f" ({esc(t.target)})" if t.target else ""
    return f"<code>{esc(t.file)}</code>{what}"


def _fastest(targets: Sequence[Target]) -> Target | None:
    """The passing target with the lowest median latency not measured by the simulator."""
    timed = [t for t in targets if t.role == "target" and t.passed and t.median is not None]
    timed = [t for t in timed if not (t.profile and t.profile.simulated)]
    return min(timed, key=lambda t: t.median or 0.0, default=None)


def _accuracy(t: Target, base: Target | None) -> str:
    """'top-1 98.61% (FP32 98.61%)', when measured."""
    if t.top1 is None:
        return ""
    check = t.accuracy_check
    fp32 = check.metric("reference_top1") if check and t is not base else None
    return f"; top-1 {t.top1:.2%}" + (f" (FP32 {fp32:.2%})" if fp32 is not None else "")


def _fastest_line(targets: Sequence[Target], base: Target | None) -> str:
    """The first line: the fastest passing target with its speed-up and size against FP32."""
    best = _fastest(targets)
    passed = [t for t in targets if t.role == "target" and t.passed]
    if best is None:
        names = ", ".join(_name(t) for t in passed) or "none"
        return (
            f'<p class="answer" data-verdict="fastest">Fastest target that passed: {MISSING} (no passing target '
            f"was profiled; the commands below measure it). Passed: {names}.</p>"
        )
    if best is base:
        rest = "no other target that passed was measured faster"
        return (
            f'<p class="answer" data-verdict="fastest">Fastest target that passed: the FP32 ONNX {_name(best)}, '
            f"median {best.median:.3f} ms; {rest}{_accuracy(best, base)}.</p>"
        )
    fp32_engine = engine_baseline(targets) if best.kind == "engine" else None
    timed_against = fp32_engine if fp32_engine is not None and fp32_engine is not best else base
    speed, size = speedup(best, timed_against), size_ratio(best, base)
    parts = []
    if speed is not None and timed_against is not None and timed_against.median is not None:
        parts.append(
            f"<b>{speed:.2f}x</b> the speed of {'the FP32 engine' if timed_against is fp32_engine else 'FP32'} "
            f"(median {best.median:.3f} ms against {timed_against.median:.3f} ms, batch {esc(_batch(best))}"
            f"{_runtimes(best, timed_against)})"
        )
    else:
        why = "no FP32 ONNX given" if base is None else "the FP32 ONNX was not profiled at the same batch"
        parts.append(f"median {best.median:.3f} ms; speed-up against FP32 {MISSING} ({why})")
    if size is not None and base is not None:
        parts.append(f"<b>{size:.2f}x</b> its size ({_mb(best.bytes)} against {_mb(base.bytes)})")
    return (
        f'<p class="answer" data-verdict="fastest">Fastest target that passed: {_name(best)}: '
        f"{', '.join(parts)}{_accuracy(best, base)}.</p>"
    )


def _smallest_line(targets: Sequence[Target], base: Target | None) -> str:
    """The smallest target that passed, when it is not the fastest and its size can be compared with FP32's."""
    sized = [t for t in targets if t.role == "target" and t.passed and t.bytes is not None]
    small = min(sized, key=lambda t: t.bytes or 0, default=None)
    ratio = size_ratio(small, base) if small is not None else None
    if small is None or small is _fastest(targets) or small is base or ratio is None:
        return ""
    speed = speedup(small, base)
    fast = f", {speed:.2f}x the speed of FP32" if speed is not None else ""
    return (
        f'<p data-verdict="smallest">Smallest target that passed: {_name(small)}: <b>{ratio:.2f}x</b> the size of '
        f"FP32 ({_mb(small.bytes)}){fast}{_accuracy(small, base)}.</p>"
    )


def _runtimes(t: Target, base: Target) -> str:
    """'; tensorrt against onnxruntime (CPU)' when the two were timed on different runtimes."""
    mine, theirs = (x.profile.backend if x.profile else None for x in (t, base))
    return f"; {esc(mine)} against {esc(theirs)}" if mine and theirs and mine != theirs else ""


def failed_check(t: Target) -> Check | None:
    """The first check of a target that failed."""
    return next((c for c in t.shown_checks if c.passed is False), None)


def _failed_line(t: Target) -> str:
    """One failed target: what it missed, where it diverged, and whether labelled accuracy dropped."""
    check = failed_check(t)
    if check is None:
        return f"<li>{_name(t)}: the run failed (no record of which gate)</li>"
    missed = "; ".join(esc(f) for f in check.failures[:MAX_FAILURES]) or "no failure recorded"
    more = len(check.failures) - MAX_FAILURES
    missed += f"; and {more} more" if more > 0 else ""
    facts = dict(check.divergence or ())
    node = facts.get("node")
    where = f"; first diverging node <code>{esc(short_node(str(node)))}</code>" if isinstance(node, str) else ""
    drop, ref, cand = (check.metric(k) for k in ("accuracy_drop", "reference_top1", "candidate_top1"))
    if drop is not None and drop <= 0 and ref is not None and cand is not None:
        where += f"; top-1 on the labelled images did not drop ({ref:.2%} -> {cand:.2%})"
    return f"<li>{_name(t)}, {esc(check.title)}: {missed}{where}</li>"


def verdict_section(targets: Sequence[Target]) -> str:
    """The page's first section: the fastest target that passed, its speed-up and size, and what failed."""
    base = baseline(targets)
    out = ['<section id="verdict">', "<h2>Verdict</h2>", _fastest_line(targets, base), _smallest_line(targets, base)]
    simulated = [t for t in targets if t.passed and t.profile and t.profile.simulated]
    if simulated:
        out.append(
            '<p class="note">Left out of "fastest": '
            + ", ".join(_name(t) for t in simulated)
            + ", whose latency is SIMULATED (ONNX Runtime on the CPU, not a GPU).</p>"
        )
    if base is None and targets:
        out.append(f'<p class="note">No FP32 ONNX was given: speed-ups and size ratios are {MISSING}.</p>')
    failed = [t for t in targets if t.passed is False]
    if failed:
        out.append('<p data-verdict="failed"><b class="fail">Failed</b>:</p>')
        out.append('<ul class="failed-list">' + "".join(_failed_line(t) for t in failed) + "</ul>")
    else:
        out.append('<p data-verdict="failed">Failed: none.</p>')
    planned = [t for t in targets if t.not_built]
    if planned:
        items = "".join(f"<li>{_name(t)}: {esc(t.not_built)}</li>" for t in planned)
        out.append(f'<p data-verdict="not-built">Not built:</p><ul>{items}</ul>')
    out.append("</section>")
    return "\n".join(out)


def ratio_text(value: float | None) -> str | None:
    """'1.80x', or None."""
    return f"{value:.2f}x" if value is not None and num(value) is not None else None
