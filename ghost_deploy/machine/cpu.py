"""The CPU: which INT8 instructions it has, and how many threads a job may use without oversubscribing it.

Threads: on a machine where other processes keep cores busy, two threads that meet at a barrier after every
layer (PyTorch's OpenMP, ONNX Runtime's pool) wait for whichever is descheduled, and a job slows down far more
than its share of the CPU would say (measured on 2 busy cores: the PyTorch reference of the shipped model took
2.5 s with 2 threads, 0.7 s with 1). `job_threads` therefore counts the cores this process may run on that are
idle right now (from /proc/stat over a short window), and a job sizes every runtime it uses from that one
number, once.

INT8 instructions: VNNI (AVX512-VNNI or AVX-VNNI) or AMX is needed for ONNX Runtime's U8S8 kernels to beat FP32,
and is not enough. On an AVX2-only CPU they are not faster (measured on GhostNet-1.0x at 224: 0.93x-1.10x FP32).
On an AVX512-VNNI CPU the 1x1 convolutions run 2.2-2.6x faster in INT8, but depthwise convolutions whose channel
count is not a multiple of 16, and a 3-channel stem, run 1.5-3.4x slower (MLAS's fallback kernels): with every
layer in INT8, GhostNet-1.0x at 224 ran at 0.86x FP32 at batch 1 (issue 20). Whether INT8 is faster is therefore
measured, per model, batch and CPU, by the `ort-int8` export (`precision.boundary`); the flags here decide only
what can be said without measuring (`int8_note`) and whether 7-bit weights are needed (`ort_layout`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# the flags that decide how fast ONNX Runtime's INT8 kernels are, in the order a report prints them
INT8_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
NO_VNNI_NOTE = (
    "this CPU has no VNNI (avx512_vnni, avx_vnni) or AMX: ONNX Runtime's INT8 kernels will not be faster than "
    "FP32 here (ort-int8 runs at 0.93x-1.10x the FP32 latency on AVX2 only); measure INT8 speed on the CPU you "
    "deploy on"
)
# how long `busy_cpus` watches the cores: /proc/stat counts in ticks of 10 ms
WINDOW_S = 0.1
_CPUINFO = Path("/proc/cpuinfo")
_STAT = Path("/proc/stat")


def cpu_flags(cpuinfo: Path = _CPUINFO) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):  # x86 / Arm
                return set(value.split())
    except OSError:
        pass
    return set()


def int8_flags(flags: set[str] | None = None) -> dict[str, bool]:
    """Whether the CPU has each of INT8_FLAGS."""
    have = cpu_flags() if flags is None else flags
    return {flag: flag in have for flag in INT8_FLAGS}


def int8_note(flags: dict[str, bool] | None = None) -> str | None:
    """NO_VNNI_NOTE on an x86 CPU without VNNI or AMX; None where INT8 kernels may be faster (or not x86): whether
    they are is what the ort-int8 export measures."""
    found = int8_flags() if flags is None else flags
    if not found.get("avx2") or any(found.get(f) for f in VNNI_FLAGS):
        return None
    return NO_VNNI_NOTE


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def physical_cores(cpuinfo: Path = _CPUINFO) -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it does not say."""
    cores, phys = set(), ""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (p.strip() for p in line.partition(":"))
            if key == "physical id":
                phys = value
            elif key == "core id":
                cores.add((phys, value))
    except OSError:
        return None
    return len(cores) or None


def _cpu_times(stat: Path, cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """(idle, total) ticks of each CPU in `cpus`, or None where /proc/stat cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in fields[:8]]
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))  # idle + iowait
    return times or None


def busy_cpus(window_s: float = WINDOW_S, stat: Path = _STAT) -> float | None:
    """How many of this process's CPUs other work kept busy during `window_s` (this thread sleeps meanwhile).

    None where /proc/stat cannot be read (not Linux).
    """
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before = _cpu_times(stat, cpus)
    if before is None:
        return None
    time.sleep(window_s)
    after = _cpu_times(stat, cpus) or {}
    busy = 0.0
    for cpu, (idle0, total0) in before.items():
        idle1, total1 = after.get(cpu, (idle0, total0))
        if total1 > total0:
            busy += 1.0 - (idle1 - idle0) / (total1 - total0)
    return busy


def threads_for(cpus: int, busy: float | None, cores: int | None) -> int:
    """Threads for a job: the idle CPUs, no more than the physical cores, at least 1."""
    free = cpus if busy is None else int(cpus - busy + 0.5)
    return max(1, min(free, cores or cpus, cpus))


def job_threads(window_s: float = WINDOW_S) -> int:
    """The threads every runtime of one job may use now: the idle cores of this process's CPUs (at least 1).

    Measured once per job (it watches the CPUs for `window_s`); give the number to each runner the job makes.
    """
    return threads_for(usable_cpus(), busy_cpus(window_s), physical_cores())
