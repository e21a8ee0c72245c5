"""The build adapter under the strict simulator (tensorrt.md s10): timing caches keyed by TensorRT and GPU, a
timing cache TensorRT refuses or cannot read, strong typing without precision flags, TF32 cleared unless asked."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from ghost_deploy.backends.trt.build import _save_timing_cache, build_plan, check_strong_flags
from ghost_deploy.backends.trt.plan import TARGETS, BuildPlan, BuildRequest, plan_build
from ghost_deploy.backends.trt.timing_cache import CacheKey, header_path, read_cache
from ghost_deploy.errors import InputError
from ghost_deploy.testing import trtsim
from tests.testing.simkit import classifier, fp16_classifier

AMPERE = trtsim.SimulatedGPU("RTX 3060 (trtsim)", "8.6", 12288)


@pytest.fixture(autouse=True)
def _no_simulation_left() -> Iterator[None]:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


def _plan(tmp_path: Path, cache: Path | None = None, target: str = "trt-fp32", **kw: object) -> BuildPlan:
    """The product's plan for the simkit classifier (3 x 8 x 8) on the installed simulation."""
    sim = trtsim.active()
    assert sim is not None
    fp32, fp16 = tmp_path / "c.onnx", tmp_path / "c.fp16.onnx"
    onnx.save(classifier(), str(fp32))
    onnx.save(fp16_classifier(), str(fp16))
    request = BuildRequest(target, "input", (3, 8, 8), onnx_fp32=fp32, onnx_fp16=fp16, timing_cache=cache, **kw)  # type: ignore[arg-type]
    return plan_build(sim.version, request)


def _build(tmp_path: Path, version: str, gpu: trtsim.SimulatedGPU | None, cache: Path) -> tuple[str, ...]:
    """Build once on `version`/`gpu` with `cache`; the notes the build gives the user."""
    with trtsim.simulate(version, gpu):
        return build_plan(_plan(tmp_path, cache)).notes


def _header(cache: Path) -> dict[str, object]:
    return dict(json.loads(header_path(cache).read_text()))


def test_a_timing_cache_is_saved_with_its_key_and_read_back_by_the_same_tensorrt_and_gpu(tmp_path: Path) -> None:
    cache = tmp_path / "t.cache"
    notes = _build(tmp_path, "10.3", trtsim.ORIN, cache)
    assert any("does not exist yet" in n for n in notes)
    header = _header(cache)
    assert header["trt_version"] == "10.3.0" and header["gpu"] == trtsim.ORIN.name
    assert header["compute_capability"] == "8.7"
    assert _build(tmp_path, "10.3", trtsim.ORIN, cache) == ()  # used as it is: nothing to say
    here = CacheKey("10.3.0", trtsim.ORIN.name, "8.7")
    assert read_cache(cache, here).checked


@pytest.mark.parametrize(
    ("version", "gpu", "said"),
    [
        (
            "10.13",
            trtsim.ORIN,
            "made by TensorRT 10.3.0 on Orin (trtsim) (compute capability 8.7), and this build runs "
            "TensorRT 10.13.0 on Orin",
        ),
        ("10.3", AMPERE, "and this build runs TensorRT 10.3.0 on RTX 3060 (trtsim) (compute capability 8.6)"),
    ],
)
def test_a_timing_cache_of_another_tensorrt_or_gpu_is_said_in_plain_words_and_replaced(
    tmp_path: Path, version: str, gpu: trtsim.SimulatedGPU, said: str
) -> None:
    cache = tmp_path / "t.cache"
    _build(tmp_path, "10.3", trtsim.ORIN, cache)
    notes = _build(tmp_path, version, gpu, cache)
    assert len(notes) == 1 and said in notes[0] and "is not used" in notes[0] and "replacing" in notes[0]
    header = _header(cache)
    assert (header["trt_version"], header["gpu"]) == (f"{version}.0", gpu.name)  # this build's cache now


def test_a_timing_cache_without_its_header_is_judged_by_tensorrt_whose_refusal_is_not_ignored(tmp_path: Path) -> None:
    """set_timing_cache returns False for a cache of another version (s10): the build says so, starts afresh."""
    cache = tmp_path / "t.cache"
    _build(tmp_path, "10.3", None, cache)
    header_path(cache).unlink()  # e.g. written by trtexec through build.sh
    notes = _build(tmp_path, "10.13", None, cache)
    assert len(notes) == 1 and "TensorRT refused timing cache" in notes[0] and "TensorRT said:" in notes[0]
    assert _header(cache)["trt_version"] == "10.13.0"


def test_a_timing_cache_rewritten_since_its_header_is_left_to_tensorrt(tmp_path: Path) -> None:
    cache = tmp_path / "t.cache"
    _build(tmp_path, "10.3", None, cache)
    header = _header(cache)
    stale = {**header, "gpu": "another GPU", "sha256": "0" * 64}  # describes other bytes than the file's now
    header_path(cache).write_text(json.dumps(stale))
    assert _build(tmp_path, "10.3", None, cache) == ()  # not believed: TensorRT checks the cache and takes it


@pytest.mark.parametrize("blob", [b"", b"garbage that is no timing cache", b"\xff" * 1000])
def test_a_file_tensorrt_cannot_read_as_a_timing_cache_starts_a_fresh_one(tmp_path: Path, blob: bytes) -> None:
    """create_timing_cache gives None for bytes that are no cache (s10, #3566): never passed on as if it were."""
    cache = tmp_path / "t.cache"
    cache.write_bytes(blob)
    notes = _build(tmp_path, "8.6", None, cache)
    if blob:
        assert len(notes) == 1 and f"TensorRT cannot read {cache} as a timing cache" in notes[0]
        assert "Magic tag does not match" in notes[0] or "will not be used" in notes[0]
    assert _header(cache)["trt_version"] == "8.6.1"


def test_no_timing_cache_in_use_is_said_and_the_file_left_alone(tmp_path: Path) -> None:
    """get_timing_cache() is None when none was set (NvInfer.h getTimingCache): nothing is written."""
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"keep")
    with trtsim.simulate("10.3"):
        import tensorrt as trt

        config = trt.Builder(trt.Logger()).create_builder_config()
        notes = _save_timing_cache(config, cache, CacheKey("10.3.0", "x", None))
    assert notes and "left as it was" in notes[0] and cache.read_bytes() == b"keep"
    assert not header_path(cache).exists()


@pytest.mark.parametrize("version", ["10.3", "10.13"])
@pytest.mark.parametrize("target", ["trt-fp32", "trt-fp16"])
def test_a_strongly_typed_build_sets_no_precision_flag_and_builds_under_the_strict_simulator(
    tmp_path: Path, version: str, target: str
) -> None:
    """NVIDIA/TensorRT#4253: FP16/BF16/INT8/FP8 on a STRONGLY_TYPED network fail the build (s10)."""
    with trtsim.simulate(version):
        plan = _plan(tmp_path, target=target, strongly_typed=True)
        assert plan.strongly_typed and not {"FP16", "BF16", "INT8", "FP8"} & set(plan.builder_flags)
        built = build_plan(plan)
    assert trtsim.plan_header(built.plan)["strongly_typed"] is True  # type: ignore[index]


@pytest.mark.parametrize("version", ["9.0.0", "10.3.0", "10.13.0", "11.1.0"])
@pytest.mark.parametrize("target", TARGETS)
def test_no_plan_gives_a_strongly_typed_network_a_precision_flag(version: str, target: str) -> None:
    files = {k: Path(f"{k}.onnx") for k in ("onnx_fp32", "onnx_fp16", "onnx_qdq_fp32", "onnx_qdq_fp16")}
    for high in (None, "fp32") if target == "trt-int8" else (None,):
        request = BuildRequest(target, "input", (3, 8, 8), strongly_typed=True, high_precision=high, **files)  # type: ignore[arg-type]
        check_strong_flags(plan_build(version, request))  # raises on a clash


def test_a_hand_made_strongly_typed_plan_with_fp16_is_refused_before_tensorrt(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        plan = dataclasses.replace(_plan(tmp_path, strongly_typed=True), builder_flags=("FP16",))
        with pytest.raises(InputError, match=r"strongly typed build .* FP16"):
            build_plan(plan)


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_is_cleared_unless_asked(tmp_path: Path, tf32: bool) -> None:
    with trtsim.simulate("11.1", AMPERE):
        built = build_plan(_plan(tmp_path, tf32=tf32))
    header = trtsim.plan_header(built.plan)
    assert header is not None and header["tf32"] is tf32 and built.facts["tf32"] is tf32


def test_ampere_plus_below_compute_capability_8_is_refused_in_plain_words(tmp_path: Path) -> None:
    """tensorrt.md s10: TensorRT fails an AMPERE_PLUS build there (logged, None); the adapter says why first."""
    with trtsim.simulate("10.3", trtsim.SimulatedGPU("Tesla T4 (trtsim)", "7.5", 15360)):
        plan = _plan(tmp_path, hardware_compatibility="ampere+")
        with pytest.raises(
            InputError, match=r"ampere\+ builds on an Ampere or newer GPU .* Tesla T4 \(trtsim\) has 7\.5"
        ):
            build_plan(plan)


@pytest.mark.parametrize(
    "header",
    [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b'"a string"', b'{"format": "ghost-deploy-timing-cache/1"}'],
)
def test_a_hostile_or_broken_header_is_not_believed(tmp_path: Path, header: bytes) -> None:
    cache = tmp_path / "t.cache"
    _build(tmp_path, "10.3", None, cache)
    header_path(cache).write_bytes(header)
    assert _build(tmp_path, "10.3", None, cache) == ()  # unknown origin: TensorRT checks the cache and takes it
    assert _header(cache)["trt_version"] == "10.3.0"  # and the build writes a header again


def test_a_gpu_whose_nvidia_smi_names_no_compute_capability_is_asked_through_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jetson boards' nvidia-smi reports compute_cap as [N/A] (or is absent): the compute capability in the engine
    cache's and the timing cache's key then comes from CUDA's device query (pycuda), never a '?'."""
    from ghost_deploy.backends.trt.compat import gpu_here
    from ghost_deploy.backends.trt.timing_cache import key_here
    from ghost_deploy.machine import probe

    with trtsim.simulate("10.3", trtsim.ORIN):
        assert gpu_here() == (trtsim.ORIN.name, "8.7")
        monkeypatch.setattr(probe, "gpus", lambda: [probe.GPU("Orin (nvgpu)", None, "540.3", "N/A")])
        assert gpu_here() == ("Orin (nvgpu)", "8.7")  # the name nvidia-smi gave, CUDA's compute capability
        monkeypatch.setattr(probe, "gpus", lambda: [])  # no nvidia-smi at all
        assert gpu_here() == (trtsim.ORIN.name, "8.7")
        assert key_here("10.3.0.26") == CacheKey("10.3.0.26", trtsim.ORIN.name, "8.7")
