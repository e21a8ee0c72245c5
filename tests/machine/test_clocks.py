"""Clock-lock detection from a Jetson-like sysfs tree."""

from __future__ import annotations

from pathlib import Path

from ghost_deploy.machine.clocks import clock_state, cpu_clocks, gpu_devfreq


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _jetson(root: Path, gpu_min: int, cpu_mins: list[int]) -> None:
    gpu = root / "class" / "devfreq" / "17000000.ga10b"
    _write(gpu / "min_freq", str(gpu_min))
    _write(gpu / "max_freq", "1300500000")
    _write(gpu / "cur_freq", "1300500000")
    _write(root / "class" / "devfreq" / "15810000.nvdla0" / "min_freq", "0")  # not the GPU
    for i, lo in enumerate(cpu_mins):
        cpufreq = root / "devices" / "system" / "cpu" / f"cpu{i}" / "cpufreq"
        _write(cpufreq / "scaling_min_freq", str(lo))
        _write(cpufreq / "scaling_max_freq", "2201600")


def test_jetson_clocks_pinned_reads_as_locked(tmp_path: Path) -> None:
    _jetson(tmp_path, 1300500000, [2201600, 2201600])
    state = clock_state(tmp_path)
    assert state["gpu"] == {
        "node": "17000000.ga10b",
        "min_hz": 1300500000,
        "max_hz": 1300500000,
        "cur_hz": 1300500000,
        "locked": True,
    }
    assert state["cpu"] == {"cpus": 2, "locked": True, "unlocked": []}


def test_dvfs_clocks_read_as_unlocked_and_name_the_cpus(tmp_path: Path) -> None:
    _jetson(tmp_path, 306000000, [2201600, 729600])
    assert gpu_devfreq(tmp_path)["locked"] is False  # type: ignore[index]
    assert cpu_clocks(tmp_path) == {"cpus": 2, "locked": False, "unlocked": ["cpu1"]}


def test_no_sysfs_gives_none(tmp_path: Path) -> None:
    assert clock_state(tmp_path) == {"gpu": None, "cpu": None}


def test_an_unlocked_jetson_gpu_clock_warns(tmp_path: Path) -> None:
    from ghost_deploy.machine.clocks import clock_warnings

    _jetson(tmp_path, 306000000, [2201600])
    env = {"jetson": {"l4t": "R36"}, "clocks": clock_state(tmp_path)}
    (warning,) = clock_warnings(env)
    assert "306-1300 MHz" in warning and "jetson_clocks" in warning
    _jetson(tmp_path, 1300500000, [2201600])
    assert clock_warnings({"jetson": {"l4t": "R36"}, "clocks": clock_state(tmp_path)}) == []
    assert clock_warnings({"jetson": None, "clocks": {"gpu": None}}) == []
