"""Whether clocks are locked, read from sysfs where it is readable (a Jetson's GPU devfreq, every CPU's cpufreq).

Latency on a Jetson swings with DVFS unless `sudo jetson_clocks` pins the clocks: it sets each governed
clock's minimum to its maximum. So "locked" here means min == max for the GPU's devfreq node and for every
CPU's cpufreq policy. Desktop GPUs report their clocks through nvidia-smi, not sysfs: None there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SYSFS = Path("/sys")
# Jetson GPU devfreq nodes: 57000000.gpu (TX2, Xavier), 17000000.ga10b / .gv11b / .gp10b (Orin, Xavier, TX2)
_GPU_NODE_HINTS = ("gpu", "ga10b", "gv11b", "gp10b", "gm20b")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def gpu_devfreq(root: Path = SYSFS) -> dict[str, Any] | None:
    """The Jetson GPU's devfreq clocks (Hz) and whether they are locked; None where there is no such node."""
    base = root / "class" / "devfreq"
    if not base.is_dir():
        return None
    for node in sorted(base.iterdir()):
        if not any(hint in node.name for hint in _GPU_NODE_HINTS):
            continue
        lo, hi = _read_int(node / "min_freq"), _read_int(node / "max_freq")
        if lo is None or hi is None:
            continue
        return {
            "node": node.name,
            "min_hz": lo,
            "max_hz": hi,
            "cur_hz": _read_int(node / "cur_freq"),
            "locked": lo == hi,
        }
    return None


def cpu_clocks(root: Path = SYSFS) -> dict[str, Any] | None:
    """Every CPU's cpufreq range (kHz) and whether all of them are locked; None where cpufreq is not exposed."""
    cpus = sorted((root / "devices" / "system" / "cpu").glob("cpu[0-9]*/cpufreq"))
    ranges = []
    for cpufreq in cpus:
        lo, hi = _read_int(cpufreq / "scaling_min_freq"), _read_int(cpufreq / "scaling_max_freq")
        if lo is not None and hi is not None:
            ranges.append((cpufreq.parent.name, lo, hi))
    if not ranges:
        return None
    unlocked = [name for name, lo, hi in ranges if lo != hi]
    return {"cpus": len(ranges), "locked": not unlocked, "unlocked": unlocked[:8]}


def clock_state(root: Path = SYSFS) -> dict[str, Any]:
    """GPU (Jetson devfreq) and CPU clock locks, each None when not readable."""
    return {"gpu": gpu_devfreq(root), "cpu": cpu_clocks(root)}


def clock_warnings(env: dict[str, Any]) -> list[str]:
    """Warnings for a Jetson whose GPU clock is not locked (an environment() dict in, lines out)."""
    gpu = (env.get("clocks") or {}).get("gpu")
    if env.get("jetson") and gpu is not None and not gpu["locked"]:
        return [
            f"the GPU clock is not locked ({gpu['min_hz'] / 1e6:.0f}-{gpu['max_hz'] / 1e6:.0f} MHz under DVFS): "
            "latency will drift; run `sudo jetson_clocks` (and a fixed `nvpmodel` mode) before profiling"
        ]
    return []
