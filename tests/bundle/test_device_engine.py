"""One bundle for every device (issue 19), under the simulated TensorRT: the packed engine where it fits, else an
engine built on the device from the bundled ONNX; verified on the bundle's reference set the first time, cached.

A bundle of the tiny trained GhostNet (tests/fixtures) is packed once under the simulated TensorRT 10.3 on the
simulated desktop GPU, and opened under 10.3, 10.13, 11.1 and 8.6 and on a simulated Orin; every result is
SIMULATED (engines run on ONNX Runtime CPU), none is a GPU's.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ghost_deploy
from ghost_deploy.backends.trt.engine_cache import ENGINE_FILE, ENTRY_FILE
from ghost_deploy.bundle.runtime import Bundle, EngineNotPreparedError, EngineRejected
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from ghost_deploy.testing.trtsim import ORIN
from tests.helpers import DIGITS, REPO, TINY_MODEL, run_cli, small_export_config

QUIET = Steps(echo=lambda text: None)
IMAGES = [next((DIGITS / "test" / str(d)).glob("*.png")) for d in (1, 4, 7)]


@pytest.fixture(scope="session")
def packed_10_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory bundle of the tiny model's trt-fp16 engine, exported and packed under the simulated 10.3."""
    out = tmp_path_factory.mktemp("one-bundle")
    trtsim.uninstall()
    with trtsim.simulate("10.3"):
        engine = ghost_deploy.export(TINY_MODEL, small_export_config("trt-fp16", out / "tiny.engine"), QUIET)
        ghost_deploy.pack([engine.artifact], out / "bundle")
    return out / "bundle"


@pytest.fixture()
def no_simulation() -> Iterator[None]:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


def _open(bundle: Path, cache: Path, **options: object) -> tuple[Bundle, list[str]]:
    said: list[str] = []
    return Bundle.open(bundle, cache_dir=cache, say=said.append, **options), said  # type: ignore[arg-type]


def _labels(bundle: Bundle) -> list[str]:
    return [bundle.predict(image, top_k=1)[0].label for image in IMAGES]


@pytest.mark.slow
def test_the_bundle_carries_what_a_device_needs(packed_10_3: Path) -> None:
    manifest = json.loads((packed_10_3 / "manifest.json").read_text())
    build = manifest["artifacts"][0]["device_build"]
    assert build["target"] == "trt-fp16" and build["onnx"]["weak"]["kind"] == "fp32"
    assert build["onnx"]["strong"]["kind"] == "fp16" and "reference inputs" in build["made_at_pack"]["fp16"]
    assert build["options"]["tf32"] is False and build["tolerances"]["min_cosine"] == 0.999
    roles = {f["path"]: f["role"] for f in manifest["files"]}
    assert roles["reference.inputs.npy"] == roles["reference.outputs.npy"] == "reference"
    assert manifest["reference"]["samples"] == 64
    inputs = np.load(packed_10_3 / "reference.inputs.npy")
    assert inputs.dtype == np.float16 and inputs.shape == (64, 3, 32, 32)
    config = (packed_10_3 / "config_infer_primary.txt").read_text()
    assert "model-engine-file=tiny.engine" in config and "onnx-file=tiny.engine.fp32.onnx" in config
    assert "NOT verified" in config


@pytest.mark.parametrize(
    ("version", "gpu", "source"),
    [("10.3", None, "packed"), ("10.13", None, "built"), ("11.1", None, "built"), ("10.3", ORIN, "built"),
     ("8.6", None, "built")],
    ids=["10.3-same-gpu", "10.13", "11.1", "10.3-orin", "8.6"],
)  # fmt: skip
def test_one_bundle_opens_everywhere_verified_once_then_cached(
    packed_10_3: Path, tmp_path: Path, no_simulation: None, version: str, gpu: trtsim.SimulatedGPU | None, source: str
) -> None:
    cache = tmp_path / "cache"
    with trtsim.simulate(version, gpu):
        first, said = _open(packed_10_3, cache)
        with first:
            assert first.engine is not None and first.engine.source == source
            assert first.engine.verification is not None and first.engine.verification["passed"]
            assert first.engine.verification["metrics"]["samples"] == 64
            labels = _labels(first)
        assert any("verifying" in line for line in said)
        assert any("building" in line for line in said) == (source == "built")
        second, said = _open(packed_10_3, cache)
        with second:
            assert second.engine is not None
            assert second.engine.source == ("packed" if source == "packed" else "cached")
            assert "earlier" in second.engine.why and second.engine.seconds == {}
            assert _labels(second) == labels
        assert said == []  # neither built nor verified again
    assert labels == ["1", "4", "7"]


@pytest.mark.slow
def test_engine_never_refuses_with_the_command_then_uses_what_prepare_made(
    packed_10_3: Path, tmp_path: Path, no_simulation: None
) -> None:
    cache = tmp_path / "cache"
    env = {"GHOST_DEPLOY_SIMULATE_TRT": "11.1", "GHOST_DEPLOY_ENGINE_CACHE": str(cache)}
    with trtsim.simulate("11.1"), pytest.raises(EngineNotPreparedError, match=r"run `ghost-deploy prepare BUNDLE`"):
        Bundle.open(packed_10_3, cache_dir=cache, engine="never")
    proc = run_cli("prepare", str(packed_10_3), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    prepared = json.loads(proc.stdout)
    assert prepared["engine"]["source"] == "built" and prepared["engine"]["verification"]["passed"]
    assert "building the engine" in proc.stderr
    with trtsim.simulate("11.1"), Bundle.open(packed_10_3, cache_dir=cache, engine="never") as opened:
        assert opened.engine is not None and opened.engine.source == "cached"
        assert str(opened.engine.path) == prepared["engine"]["path"]


@pytest.mark.parametrize("damage", ["engine-byte", "engine-gone", "entry-json"])
def test_a_damaged_cache_entry_is_rebuilt_not_trusted(
    packed_10_3: Path, tmp_path: Path, no_simulation: None, damage: str
) -> None:
    cache = tmp_path / "cache"
    with trtsim.simulate("11.1"):
        with Bundle.open(packed_10_3, cache_dir=cache) as first:
            assert first.engine is not None and first.engine.cache_entry is not None
            entry = first.engine.cache_entry
        if damage == "engine-byte":
            data = bytearray((entry / ENGINE_FILE).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (entry / ENGINE_FILE).write_bytes(bytes(data))
        elif damage == "engine-gone":
            (entry / ENGINE_FILE).unlink()
        else:
            (entry / ENTRY_FILE).write_text("{not json")
        again, said = _open(packed_10_3, cache)
        with again:
            assert again.engine is not None and again.engine.source == "built"
            assert again.engine.verification is not None and again.engine.verification["passed"]
            assert _labels(again) == ["1", "4", "7"]
    assert any("damaged" in line for line in said)


@pytest.mark.slow
def test_two_threads_opening_on_a_fresh_device_build_once(
    packed_10_3: Path, tmp_path: Path, no_simulation: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GHOST_DEPLOY_SIMULATE_BUILD_SECONDS", "1")  # both threads are in open during the build
    cache = tmp_path / "cache"
    sources: list[str] = []
    errors: list[BaseException] = []

    def open_and_predict() -> None:
        try:
            with Bundle.open(packed_10_3, cache_dir=cache) as opened:
                assert opened.engine is not None
                sources.append(opened.engine.source)
                assert _labels(opened) == ["1", "4", "7"]
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    with trtsim.simulate("11.1"):
        threads = [threading.Thread(target=open_and_predict) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == [] and sorted(sources) == ["built", "cached"]


def _prepare_process(bundle: Path, cache: Path, seconds: str, *more: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GHOST_DEPLOY_SIMULATE_TRT": "11.1"}
    env.update(GHOST_DEPLOY_SIMULATE_BUILD_SECONDS=seconds, GHOST_DEPLOY_ENGINE_CACHE=str(cache))
    cmd = [sys.executable, "-m", "ghost_deploy", "prepare", str(bundle), "--json", *more]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


@pytest.mark.slow
def test_two_processes_on_a_fresh_device_build_once(packed_10_3: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs = [_prepare_process(packed_10_3, cache, "4") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    sources = sorted(json.loads(out)["engine"]["source"] for out, _ in outs)
    assert sources == ["built", "cached"]  # the second waited on the lock (or came after): it built nothing
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1  # one entry, no leftover


@pytest.mark.slow
def test_a_build_killed_halfway_leaves_nothing_usable(packed_10_3: Path, tmp_path: Path, no_simulation: None) -> None:
    cache = tmp_path / "cache"
    proc = _prepare_process(packed_10_3, cache, "60")
    deadline = time.monotonic() + 120
    while not list(cache.glob(".staging-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(cache.glob(".staging-*")), "the build never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    listed = run_cli("cache", "list", "--cache-dir", str(cache), "--json")
    assert [i["kind"] for i in json.loads(listed.stdout)["items"]] == ["unfinished"]
    with trtsim.simulate("11.1"), pytest.raises(EngineNotPreparedError):
        Bundle.open(packed_10_3, cache_dir=cache, engine="never")  # the unfinished build is nothing to use
    with trtsim.simulate("11.1"), Bundle.open(packed_10_3, cache_dir=cache) as opened:  # the lock was released
        assert opened.engine is not None and opened.engine.source == "built"
    assert not list(cache.glob(".staging-*"))  # the leftover went with the next build of that key


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`ghost-deploy ARGS` in this process (under whatever simulation the test installed)."""
    from ghost_deploy.cli.main import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_engine_the_device_makes_wrong_is_rejected_exit_4_and_kept_aside(
    packed_10_3: Path, tmp_path: Path, no_simulation: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cache = tmp_path / "cache"
    run = ("run", str(packed_10_3), *map(str, IMAGES), "--cache-dir", str(cache))
    with trtsim.simulate("11.1"):
        monkeypatch.setenv("GHOST_DEPLOY_SIMULATE_WRONG_ENGINE", "1")
        code, out, err = _cli(capsys, *run)
        assert code == 4, err
        assert "failed its verification" in err and "top-1 agreement" in err and ".png:" not in out
        with pytest.raises(EngineRejected) as rejected:
            Bundle.open(packed_10_3, cache_dir=cache, engine="rebuild")
        assert rejected.value.result["verification"]["metrics"]["top1_agreement"] < 0.5  # type: ignore[index]
        monkeypatch.delenv("GHOST_DEPLOY_SIMULATE_WRONG_ENGINE")
        kept = sorted((cache / "rejected").iterdir())
        assert len(kept) == 2 and {p.name for p in kept[0].iterdir()} >= {
            ENGINE_FILE,
            "verification.json",
            "build.json",
        }
        assert trtsim.plan_header((kept[0] / ENGINE_FILE).read_bytes())["fault"] == "wrong-outputs"  # type: ignore[index]
        assert not [p for p in cache.iterdir() if p.name != "rejected" and p.is_dir()]  # nothing usable was cached
        code, _, err = _cli(capsys, *run)  # not built again silently
        assert code == 4 and "earlier" in err and "--rebuild" in err
        code, out, err = _cli(capsys, *run, "--engine", "rebuild", "--json")
    assert code == 0, err
    assert json.loads(out)["engine"]["source"] == "built" and json.loads(out)["results"][2]["top"][0]["label"] == "7"


def test_without_tensorrt_the_bundle_opens_as_before(
    packed_10_3: Path, tmp_path: Path, no_simulation: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lone simulated engine is refused (exit 2); with the ONNX beside it, the ONNX runs on ONNX Runtime and only
    the engine is refused, with the reason; a lone real engine needs the trt extra (exit 3)."""
    code, _, err = _cli(capsys, "run", str(packed_10_3), str(IMAGES[0]))
    assert code == 2 and "SIMULATED TensorRT" in err
    onnx = next(packed_10_3.parent.glob("tiny.build.onnx"))
    with_onnx = tmp_path / "mixed"
    ghost_deploy.pack([packed_10_3.parent / "tiny.engine", onnx], with_onnx)
    code, out, err = _cli(capsys, "run", str(with_onnx), str(IMAGES[2]), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["artifact"] == "tiny.build.onnx" and report["backend"] == "onnxruntime"
    assert report["results"][0]["top"][0]["label"] == "7"
    assert "tiny.engine (trt-fp16) is not used here" in err and "SIMULATED" in err
    code, _, err = _cli(capsys, "run", str(with_onnx), str(IMAGES[2]), "--artifact", "trt-fp16")
    assert code == 2 and "SIMULATED TensorRT" in err
    manifest_path = with_onnx / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["kind"] == "engine"]
    manifest["artifacts"][0]["tensorrt"]["simulated"] = False
    fake = b"\x00" * 4096  # not a simulated plan: a 'real' engine, for this test
    (with_onnx / "tiny.engine").write_bytes(fake)
    for entry in manifest["files"]:
        if entry["path"] == "tiny.engine":
            entry.update(bytes=len(fake), sha256=hashlib.sha256(fake).hexdigest())
    manifest_path.write_text(json.dumps(manifest))
    code, _, err = _cli(capsys, "run", str(with_onnx), str(IMAGES[2]))
    assert code == 3 and "ghost-deploy[trt]" in err


def test_cache_list_and_prune(
    packed_10_3: Path, tmp_path: Path, no_simulation: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    for version in ("10.13", "11.1"):
        with trtsim.simulate(version), Bundle.open(packed_10_3, cache_dir=cache):
            pass
    listed = json.loads(_cli(capsys, "cache", "list", "--cache-dir", str(cache), "--json")[1])
    assert sorted(i["trt_version"] for i in listed["items"]) == ["10.13.0.35", "11.1.0.106"]
    assert all(i["kind"] == "entry" and i["bytes"] > 1000 for i in listed["items"])
    newest = listed["items"][0]
    code, out, err = _cli(
        capsys, "cache", "prune", "--cache-dir", str(cache), "--max-size", str(newest["bytes"]), "--json"
    )
    assert code == 0, err
    pruned = json.loads(out)
    assert len(pruned["removed"]) == 1 and pruned["kept_entries"] == 1
    assert [p for p in cache.iterdir() if p.is_dir()] == [Path(newest["path"])]
    assert _cli(capsys, "cache", "prune", "--cache-dir", str(cache))[0] == 2  # nothing said what to prune
    assert (
        json.loads(_cli(capsys, "cache", "prune", "--all", "--cache-dir", str(cache), "--json")[1])["kept_bytes"] == 0
    )


def test_a_prune_after_open_changes_nothing_that_runs(packed_10_3: Path, tmp_path: Path, no_simulation: None) -> None:
    """The engine's bytes are read while its cache entry is locked: `cache prune` between open and the first
    prediction removes the entry, not what the opened bundle runs (before: FileNotFoundError, exit 1)."""
    from ghost_deploy.backends.trt.cache_admin import prune_cache
    from ghost_deploy.backends.trt.engine_cache import EngineCache

    cache = tmp_path / "cache"
    with trtsim.simulate("10.13"):
        Bundle.open(packed_10_3, cache_dir=cache).close()  # built, verified, cached
        with Bundle.open(packed_10_3, cache_dir=cache) as bundle:
            assert bundle.engine is not None and bundle.engine.source == "cached"
            assert len(prune_cache(EngineCache(cache), everything=True)["removed"]) == 1
            assert not bundle.engine.path.exists()
            assert _labels(bundle) == ["1", "4", "7"]


def _with_tolerances(bundle: Path, dst: Path, **tolerances: object) -> Path:
    import shutil

    shutil.copytree(bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["artifacts"][0]["device_build"]["tolerances"].update(tolerances)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_a_packed_engine_that_failed_here_is_not_verified_again(
    packed_10_3: Path, tmp_path: Path, no_simulation: None
) -> None:
    """A packed engine that fits but fails the reference set is refused at every open without verifying (and
    copying it aside) again; before, each open re-ran the verification and kept another copy."""
    strict = _with_tolerances(packed_10_3, tmp_path / "strict", max_abs=1e-12, rtol=0.0)  # FP16 never meets it
    cache = tmp_path / "cache"
    with trtsim.simulate("10.3"):
        for attempt in range(3):
            with pytest.raises(EngineRejected) as rejected:
                Bundle.open(strict, cache_dir=cache, say=lambda text: None)
            assert ("earlier" in str(rejected.value)) == (attempt > 0)
    assert len(list((cache / "rejected").iterdir())) == 1


def test_tolerances_this_version_does_not_know_are_a_manifest_error(
    packed_10_3: Path, tmp_path: Path, no_simulation: None
) -> None:
    from ghost_deploy.bundle.errors import ManifestError

    newer = _with_tolerances(packed_10_3, tmp_path / "newer", max_rel_error=0.1)  # a newer packer's gate
    with trtsim.simulate("10.13"), pytest.raises(ManifestError, match="max_rel_error"):
        Bundle.open(newer, cache_dir=tmp_path / "cache")


def test_an_engine_this_tensorrt_can_neither_use_nor_build_gives_way_to_the_onnx(
    packed_10_3: Path, tmp_path: Path, no_simulation: None
) -> None:
    """By the default rule (nothing asked for), an engine that does not fit here and cannot be built here is passed
    over, with the reason, for the bundle's ONNX; asked for by name, it is refused with that reason."""
    from ghost_deploy.bundle.errors import EngineMismatchError

    mixed = tmp_path / "mixed"
    ghost_deploy.pack([packed_10_3.parent / "tiny.engine", packed_10_3.parent / "tiny.build.onnx"], mixed)
    manifest = json.loads((mixed / "manifest.json").read_text())
    manifest["artifacts"][0].pop("device_build")  # an engine packed without what a device needs to rebuild it
    (mixed / "manifest.json").write_text(json.dumps(manifest))
    with trtsim.simulate("10.13"):
        with Bundle.open(mixed, cache_dir=tmp_path / "cache") as bundle:
            assert bundle.choice is not None and bundle.choice.artifact["file"] == "tiny.build.onnx"
            assert bundle.choice.backend == "onnxruntime"
            assert any(line.startswith("tiny.engine (trt-fp16) is not used here") for line in bundle.choice.not_here)
            assert _labels(bundle) == ["1", "4", "7"]
        with pytest.raises(EngineMismatchError):
            Bundle.open(mixed, cache_dir=tmp_path / "cache", artifact="trt-fp16")


@pytest.mark.slow
def test_an_int8_engine_exported_from_a_checkpoint_with_pack_can_be_rebuilt_on_another_device(
    tmp_path: Path, no_simulation: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """trt-int8 builds from the Q/DQ graph and writes no FP32 ONNX, so `ghost-export --pack` hands the export's
    FP32 ONNX to the bundle as its reference (before: no device material, a warning naming a flag export lacks)."""
    from ghost_deploy.cli.main import export_main

    bundle = tmp_path / "b.tar.gz"
    argv = [str(TINY_MODEL), "--target", "trt-int8", "-o", str(tmp_path / "t.engine"), "--eval-limit", "32",
            "--calib-size", "16", "--pack", str(bundle), "-q"]  # fmt: skip
    with trtsim.simulate("10.3"):
        assert export_main(argv) == 0, capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err
    assert not list(tmp_path.glob("*.fp32.onnx"))  # the reference went into the bundle only
    with trtsim.simulate("11.1"), Bundle.open(bundle, cache_dir=tmp_path / "cache") as opened:
        assert opened.engine is not None and opened.engine.source == "built"
        assert opened.engine.verification is not None and opened.engine.verification["passed"]
        assert _labels(opened) == ["1", "4", "7"]
