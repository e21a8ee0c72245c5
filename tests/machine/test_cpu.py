"""The CPU's INT8 flags with the no-VNNI note, and how many threads a job takes on a busy machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghost_deploy.machine import cpu

AVX2_ONLY = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
VNNI = AVX2_ONLY.replace("fma", "fma avx512f avx512_vnni")


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_cpu_without_vnni_gets_the_note(tmp_path: Path) -> None:
    flags = cpu.int8_flags(cpu.cpu_flags(_file(tmp_path, "avx2", AVX2_ONLY)))
    assert flags == {"avx2": True, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
    note = cpu.int8_note(flags)
    assert note is not None and "will not be faster" in note and "VNNI" in note
    assert cpu.int8_note(cpu.int8_flags(cpu.cpu_flags(_file(tmp_path, "vnni", VNNI)))) is None
    assert cpu.int8_note(cpu.int8_flags(set())) is None  # not x86 (or unreadable): nothing to say
    assert cpu.cpu_flags(tmp_path / "missing") == set()


def test_this_machine_reports_its_own_flags() -> None:
    flags = cpu.int8_flags()
    assert list(flags) == ["avx2", "avx512_vnni", "avx_vnni", "amx_int8"]
    assert (cpu.int8_note() is None) == (not flags["avx2"] or any(flags[f] for f in cpu.VNNI_FLAGS))


@pytest.mark.parametrize(
    ("cpus", "busy", "cores", "expected"),
    [
        (2, 0.0, 2, 2),  # idle: every core
        (2, 2.0, 2, 1),  # two busy processes on two cores: one thread, never two that wait on each other
        (2, 1.2, 2, 1),
        (16, 3.0, 8, 8),  # no more threads than physical cores
        (4, None, None, 4),  # not Linux: the affinity mask alone
        (4, 9.0, 4, 1),  # overloaded: still one
    ],
)
def test_threads_follow_the_idle_cores(cpus: int, busy: float | None, cores: int | None, expected: int) -> None:
    assert cpu.threads_for(cpus, busy, cores) == expected


def test_busy_cpus_reads_proc_stat_and_job_threads_stays_in_range(tmp_path: Path) -> None:
    stat = _file(tmp_path, "stat", "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 10 80 0 0 0 0 0 0\n")
    assert cpu.busy_cpus(0.0, stat) == 0.0  # nothing moved between the two reads
    assert cpu.busy_cpus(0.0, tmp_path / "missing") is None
    assert 1 <= cpu.job_threads(0.05) <= cpu.usable_cpus()
    assert cpu.physical_cores(_file(tmp_path, "info", AVX2_ONLY)) == 1
