"""The engine cache's storage: keys, damaged entries, the lock, leftovers of killed builds, listing and pruning.

The end-to-end scenarios (builds under the simulated TensorRT, two processes, a killed build) are in
tests/bundle/test_device_engine.py; here the storage rules are checked on their own, with real files.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from ghost_deploy.backends.trt.cache_admin import list_cache, parse_size, prune_cache
from ghost_deploy.backends.trt.engine_cache import (
    ENGINE_FILE,
    ENTRY_FILE,
    VERIFICATION_FILE,
    CacheKey,
    EngineCache,
    default_root,
    hold_lock,
)
from ghost_deploy.errors import InputError

PASSED = {"passed": True, "failures": []}


def key(**changes: object) -> CacheKey:
    base = dict(
        artifact_sha256="a" * 64,
        source="built",
        trt_version="10.3.0.26",
        gpu="Orin",
        compute_capability="8.7",
        dla_core=None,
        onnx_sha256="b" * 64,
        reference_sha256="c" * 64,
    )
    options = changes.pop("options", {"batch": 1, "tf32": False})
    return CacheKey.make(options, **{**base, **changes})  # type: ignore[arg-type]


def publish(cache: EngineCache, k: CacheKey, engine: bytes | None = b"plan" * 100) -> Path:
    with cache.locked(k):
        staging = cache.staging(k)
        if engine is not None:
            (staging / ENGINE_FILE).write_bytes(engine)
        return cache.publish(k, staging, {"built": True}, PASSED).folder


def test_the_key_names_everything_an_engine_depends_on() -> None:
    assert key().name == key(options={"tf32": False, "batch": 1}).name  # order does not matter
    for change in (
        {"trt_version": "10.3.0.27"},
        {"gpu": "Orin NX"},
        {"compute_capability": "8.6"},
        {"dla_core": 0},
        {"options": {"batch": 1, "tf32": True}},
        {"artifact_sha256": "d" * 64},
        {"reference_sha256": "e" * 64},
        {"source": "packed"},
    ):
        assert key(**change).name != key().name, change


def test_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GHOST_DEPLOY_ENGINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "ghost-deploy" / "engines"
    monkeypatch.setenv("GHOST_DEPLOY_ENGINE_CACHE", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"


def test_a_published_entry_is_found_and_every_damage_is_reported(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    k = key()
    assert cache.lookup(k).entry is None and cache.lookup(k).damaged is None
    folder = publish(cache, k)
    found = cache.lookup(k).entry
    assert found is not None and found.engine == folder / ENGINE_FILE and found.verification == PASSED
    damages = {
        "truncated": lambda: (folder / ENGINE_FILE).write_bytes(b"plan"),
        "missing engine": lambda: (folder / ENGINE_FILE).unlink(),
        "another key": lambda: (folder / ENTRY_FILE).write_text((folder / ENTRY_FILE).read_text().replace("Orin", "X")),
        "failed verification": lambda: (folder / VERIFICATION_FILE).write_text('{"passed": false}'),
        "not JSON": lambda: (folder / ENTRY_FILE).write_text("{"),
        "huge": lambda: (folder / VERIFICATION_FILE).write_bytes(b" " * (5 << 20)),
    }
    for name, damage in damages.items():
        cache.remove(k)
        folder = publish(cache, k)
        damage()
        looked = cache.lookup(k)
        assert looked.entry is None and looked.damaged, name


def test_a_packed_engines_entry_holds_only_its_verification(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    k = key(source="packed", onnx_sha256=None)
    publish(cache, k, engine=None)
    found = cache.lookup(k).entry
    assert found is not None and found.engine is None and found.verification["passed"]


def test_the_lock_excludes_threads_of_one_process_and_waiting_is_said(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    k = key()
    order: list[str] = []
    waited = threading.Event()
    inside = threading.Event()

    def first() -> None:
        with cache.locked(k):
            inside.set()
            time.sleep(0.3)
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with (
        pytest.raises(InputError, match="in use by another process"),
        hold_lock(tmp_path / f"{k.name}.lock", blocking=False),
    ):
        pass
    with cache.locked(k, waited.set):
        order.append("second")
    thread.join()
    assert order == ["first", "second"] and waited.is_set()
    assert not list(tmp_path.glob("*.lock"))  # lock files go with their holders


def test_staging_removes_leftovers_of_its_key_only_and_a_leftover_is_no_entry(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    a, b = key(), key(gpu="other")
    with cache.locked(a), cache.locked(b):
        left_a, left_b = cache.staging(a), cache.staging(b)
        (left_a / ENGINE_FILE).write_bytes(b"half a plan")  # what a killed build leaves
    assert cache.lookup(a).entry is None and cache.lookup(a).damaged is None
    assert [i.kind for i in list_cache(cache)] == ["unfinished", "unfinished"]
    with cache.locked(a):
        fresh = cache.staging(a)
    assert not left_a.exists() and left_b.exists() and fresh.is_dir()


def test_prune_by_age_size_and_all_never_removes_an_entry_in_use(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    keys = [key(gpu=f"gpu{i}") for i in range(4)]
    folders = [publish(cache, k, engine=b"x" * (1000 * (i + 1))) for i, k in enumerate(keys)]
    old = time.time() - 40 * 86400
    os.utime(folders[0] / ENTRY_FILE, (old, old))
    with cache.locked(keys[0], None):  # in use: a build or an open of this key
        report = prune_cache(cache, older_than_days=30)
    assert report["removed"] == [] and len(report["busy"]) == 1 and folders[0].exists()
    report = prune_cache(cache, older_than_days=30)
    assert [Path(r["path"]) for r in report["removed"]] == [folders[0]]
    keep = sum(i.bytes for i in list_cache(cache) if i.path == folders[3])
    report = prune_cache(cache, max_bytes=keep)
    assert {Path(r["path"]) for r in report["removed"]} == set(folders[1:3]) and folders[3].exists()
    with cache.locked(keys[3]):
        staging = cache.staging(keys[3])
        cache.reject(keys[3], staging, {}, {"passed": False})
    assert {i.kind for i in list_cache(cache)} == {"entry", "rejected"}
    prune_cache(cache, older_than_days=1000)
    assert {i.kind for i in list_cache(cache)} == {"entry", "rejected"}  # rejected engines stay for the user
    assert prune_cache(cache, everything=True)["kept_bytes"] == 0 and list_cache(cache) == []
    with pytest.raises(InputError, match="say what to prune"):
        prune_cache(cache)


def test_sizes_parse_like_people_write_them() -> None:
    assert [parse_size(t) for t in ("0", "500", "2K", "500M", "1.5G", "2GiB", "3 mb")] == [
        0, 500, 2048, 500 << 20, 3 << 29, 2 << 30, 3 << 20,
    ]  # fmt: skip
    with pytest.raises(InputError, match="not a size"):
        parse_size("lots")


def test_an_unwritable_cache_names_the_variable_that_moves_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="GHOST_DEPLOY_ENGINE_CACHE"), EngineCache(blocker / "engines").locked(key()):
        pass
    assert dataclasses.asdict(key())["options"]  # the key stays a plain record


@pytest.mark.parametrize("to", ["existing", "missing"])
def test_a_link_planted_at_a_cache_lock_is_refused_never_followed(tmp_path: Path, to: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone's file\n")
    cache = EngineCache(tmp_path / "cache")
    cache.root.mkdir()
    target = victim if to == "existing" else tmp_path / "created-through-the-link"
    (cache.root / f"{key().name}.lock").symlink_to(target)
    with pytest.raises(InputError, match="is a symbolic link, not a lock ghost-deploy made"), cache.locked(key()):
        pass
    assert victim.read_bytes() == b"someone's file\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "victim.txt",
    ]


def test_staging_is_private_and_its_records_are_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone's file\n")
    cache = EngineCache(tmp_path / "cache")
    k = key()
    with cache.locked(k):
        staging = cache.staging(k)
        assert staging.stat().st_mode & 0o777 == 0o700
        (staging / ENGINE_FILE).write_bytes(b"plan")
        (staging / ENTRY_FILE).symlink_to(victim)  # a link where a record goes is replaced, not followed
        entry = cache.publish(k, staging, {"built": True}, PASSED)
    assert victim.read_bytes() == b"someone's file\n" and not (entry.folder / ENTRY_FILE).is_symlink()
    assert cache.lookup(k).entry is not None
