"""The engine a bundle runs on this device: the packed one when it fits, else one built here; verified either way.

`decide` says, without building or verifying anything, which engine would be used and why (what `inspect`
prints); `resolve` makes it so (what `Bundle.open` and `ghost-deploy prepare` do):

- the packed engine, when it fits this TensorRT and GPU by NVIDIA's rules (`backends.trt.compat`), unless
  `engine="rebuild"`; the first time it is used on this device it is verified against the bundle's reference
  set, and that verification is cached;
- else an engine built here from the bundle's ONNX with the plan for this TensorRT and GPU
  (`backends.trt.plan.plan_build`), verified, and cached (`backends.trt.engine_cache`): a later open uses it
  without building or verifying again. Under one lock per cache key, so that processes and threads opening
  the same bundle on a fresh device build once.

An engine that fails its verification is never used: `EngineRejected` (exit 4) names the metrics, and the
engine and its report are kept under the cache's `rejected/`. `engine="never"` refuses to build
(`EngineNotPreparedError`, naming `ghost-deploy prepare`). Nothing here imports torch or the export stages.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghost_deploy.backends.trt.engine_cache import ENGINE_FILE, CacheKey, EngineCache
from ghost_deploy.bundle.device_verify import earlier_rejection, reject, tolerances_of, verify_engine
from ghost_deploy.bundle.errors import EngineMismatchError, EngineNotPreparedError
from ghost_deploy.errors import InputError, MissingDependencyError

POLICIES = ("auto", "rebuild", "never")
Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Machine:
    """This machine's TensorRT and GPU, as an engine's compatibility depends on them."""

    trt_version: str
    gpu: str
    compute_capability: str | None
    jetson: bool
    simulated: bool

    @classmethod
    def here(cls) -> Machine:
        """Read from `machine.probe` (the simulated TensorRT and GPU while the simulator is active)."""
        from ghost_deploy.machine import probe

        version = probe.tensorrt_version()
        if version is None:
            raise MissingDependencyError("tensorrt", "trt", "Running or building a TensorRT engine")
        from ghost_deploy.backends.trt.compat import gpu_here

        name, cc = gpu_here()  # one identity for every key (the engine cache and the timing cache)
        return cls(version, name, cc, probe.jetson() is not None, probe.simulation() is not None)

    def describe(self) -> str:
        """'TensorRT 10.3.0.26 (simulated) on Orin (trtsim), compute capability 8.7'."""
        sim = " (SIMULATED)" if self.simulated else ""
        return f"TensorRT {self.trt_version}{sim} on {self.gpu}, compute capability {self.compute_capability or '?'}"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What `resolve` would do: 'packed' (verified earlier), 'verify-packed', 'packed-unverified' (no reference
    set), 'cached' or 'build'; with the sentence saying why."""

    action: str
    why: str
    key: CacheKey | None = None
    plan: Any = None  # the BuildPlan of a built engine


@dataclasses.dataclass(frozen=True)
class DeviceEngine:
    """The engine to run: its file, where it came from ('packed', 'cached', 'built'), how to load it, the
    verification it passed on this device (None: the bundle has no reference set), and why it was chosen."""

    path: Path
    source: str
    why: str
    version_compatible: bool
    dla_core: int | None
    verification: dict[str, Any] | None
    seconds: dict[str, float]
    cache_entry: Path | None = None
    # a cached engine's bytes, read while its cache entry was locked: what runs is what was checked, even if
    # `cache prune` or another process's rebuild removes or replaces the file afterwards
    plan: bytes | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `prepare --json` and `run --json`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "plan"}
        out["path"], out["cache_entry"] = str(self.path), str(self.cache_entry) if self.cache_entry else None
        return out


def decide(root: Path, manifest: dict[str, Any], entry: dict[str, Any], policy: str, cache: EngineCache) -> Decision:
    """Which engine `resolve` would use for `entry` on this machine, and why; builds and verifies nothing."""
    if policy not in POLICIES:
        raise InputError(f"engine={policy!r} is not one of {', '.join(POLICIES)}")
    machine = Machine.here()
    misfit = "engine='rebuild' was asked" if policy == "rebuild" else None
    if entry["kind"] == "engine" and misfit is None:
        misfit = packed_misfit(root, entry, machine)
        if misfit is None:
            return _packed_decision(manifest, entry, machine, cache)
    elif entry["kind"] == "onnx":
        misfit = "it is an ONNX packed for TensorRT"
    build = entry.get("device_build")
    if not isinstance(build, dict) or "reference" not in manifest:
        raise EngineMismatchError(
            f"{entry['file']}: {misfit}; and this bundle carries no ONNX to build an engine here (packed by an "
            "older ghost-deploy, or without the model's FP32 ONNX): rebuild it on this device "
            f"(bash {entry['file']}.build.sh, or ghost-deploy build), or pack it again with --reference FP32.onnx"
        )
    plan, key = _plan_here(root, manifest, entry, machine)
    found = cache.lookup(key)
    if found.entry is not None and policy != "rebuild":
        return Decision("cached", f"{misfit}; an engine built and verified on this device earlier is cached "
                        f"({found.entry.folder})", key, plan)  # fmt: skip
    onnx_name = plan.onnx_path.name
    if policy == "never":
        raise EngineNotPreparedError(
            f"{entry['file']}: {misfit}; an engine must be built here from {onnx_name} for {machine.describe()}, "
            "and engine='never' forbids building at open: run `ghost-deploy prepare BUNDLE` once on this device "
            f"(it builds and verifies the engine into {cache.root})"
        )
    damaged = f"; the cached engine is damaged ({found.damaged}) and is rebuilt" if found.damaged else ""
    return Decision("build", f"{misfit}; built here from {onnx_name} ({plan.onnx_reason}) for {machine.describe()}, "
                    f"then verified against the reference set{damaged}", key, plan)  # fmt: skip


def _packed_decision(manifest: dict[str, Any], entry: dict[str, Any], machine: Machine, cache: EngineCache) -> Decision:
    fits = f"the packed engine fits {machine.describe()}"
    if "reference" not in manifest:
        return Decision("packed-unverified", f"{fits}; NOT verified on this device: the bundle has no reference set "
                        "(packed by an older ghost-deploy, or without the model's FP32 ONNX)")  # fmt: skip
    key = _packed_key(manifest, entry, machine)
    if cache.lookup(key).entry is not None:
        return Decision("packed", f"{fits}; verified on this device earlier (cached)", key)
    return Decision("verify-packed", f"{fits}; first use on this device: verified against the reference set now", key)


def packed_misfit(root: Path, entry: dict[str, Any], machine: Machine) -> str | None:
    """Why the packed engine cannot run on this machine (None when it fits), by NVIDIA's rules."""
    from ghost_deploy.backends.trt.compat import check_compatible
    from ghost_deploy.testing.trtsim.plan import is_simulated_plan

    trt = entry.get("tensorrt") or {}
    simulated = bool(trt.get("simulated")) or is_simulated_plan(root / entry["file"])
    if simulated and not machine.simulated:
        return (
            f"the packed engine was built by a SIMULATED TensorRT {trt.get('version', '?')}: it is no engine for a GPU"
        )
    if machine.simulated and not simulated:
        return "the packed engine is a real TensorRT plan, which the simulated TensorRT cannot run"
    try:
        check_compatible(origin_of(trt), machine.trt_version, machine.compute_capability, machine.jetson)
    except InputError as exc:
        return str(exc).split(": rebuild it here")[0].replace("this engine was", "the packed engine was")
    return None


def origin_of(entry: dict[str, Any]) -> Any:
    """The EngineOrigin a manifest's `tensorrt` entry describes."""
    from ghost_deploy.backends.trt.compat import EngineOrigin

    core = entry.get("dla_core")
    return EngineOrigin(
        trt_version=str(entry.get("version", "")),
        compute_capability=entry.get("compute_capability"),
        version_compatible=bool(entry.get("version_compatible", False)),
        hardware_compatibility=entry.get("hardware_compatibility"),
        dla_core=core if isinstance(core, int) else None,
    )


def _sha(manifest: dict[str, Any], name: str) -> str:
    return str(next(f["sha256"] for f in manifest["files"] if f["path"] == name))


def _reference_sha(manifest: dict[str, Any]) -> str:
    ref = manifest["reference"]
    return _sha(manifest, ref["inputs"])[:32] + _sha(manifest, ref["outputs"])[:32]


def _packed_key(manifest: dict[str, Any], entry: dict[str, Any], machine: Machine) -> CacheKey:
    return CacheKey.make(
        {"tolerances": tolerances_of(entry)},
        artifact_sha256=_sha(manifest, entry["file"]),
        source="packed",
        trt_version=machine.trt_version,
        gpu=machine.gpu,
        compute_capability=machine.compute_capability,
        dla_core=origin_of(entry.get("tensorrt") or {}).dla_core,
        onnx_sha256=None,
        reference_sha256=_reference_sha(manifest),
    )


def _plan_here(root: Path, manifest: dict[str, Any], entry: dict[str, Any], machine: Machine) -> tuple[Any, CacheKey]:
    """The build plan for this TensorRT from the bundle's ONNX, and the cache key of its engine."""
    from ghost_deploy.backends.trt.plan import BuildRequest, parse_trt_version, plan_build

    build = entry["device_build"]
    typing = "strong" if parse_trt_version(machine.trt_version) >= (11, 0, 0) else "weak"
    graph = (build.get("onnx") or {}).get(typing)
    if graph is None:
        why = (build.get("unavailable") or {}).get(typing, "the bundle has no ONNX for it")
        raise EngineMismatchError(
            f"{entry['file']}: this bundle cannot build {build['target']} for {machine.describe()}: {why}"
        )
    options = dict(build["options"])
    kind = graph["kind"].replace("-", "_")
    chw = tuple(manifest["input"]["shape"][1:])
    cache = build.get("calibration_cache")
    dyn = options.get("dynamic_batch")
    try:
        request = BuildRequest(
            target=build["target"], input_name=manifest["input"]["name"], input_chw=chw,  # type: ignore[arg-type]
            int8_mode=options["int8_mode"], calibration_cache=root / cache if cache else None,
            batch=options["batch"], dynamic_batch=tuple(dyn) if dyn else None,  # type: ignore[arg-type]
            workspace_mib=options.get("workspace_mib"), optimization_level=options.get("optimization_level"),
            hardware_compatibility=options.get("hardware_compatibility", "none"),
            version_compatible=bool(options.get("version_compatible")), dla_core=options.get("dla_core"),
            high_precision=options.get("high_precision"), **{f"onnx_{kind}": root / graph["file"]},
            tf32=bool(options.get("tf32", False)),
        )  # fmt: skip
        plan = plan_build(machine.trt_version, request)
    except InputError as exc:
        raise EngineMismatchError(f"{entry['file']}: this bundle cannot build {build['target']} for "
                                  f"{machine.describe()}: {exc}") from None  # fmt: skip
    key = CacheKey.make(
        {**options, "typing": typing, "target": build["target"], "tolerances": tolerances_of(entry)},
        artifact_sha256=_sha(manifest, entry["file"]),
        source="built",
        trt_version=machine.trt_version,
        gpu=machine.gpu,
        compute_capability=machine.compute_capability,
        dla_core=options.get("dla_core"),
        onnx_sha256=_sha(manifest, graph["file"]),
        reference_sha256=_reference_sha(manifest),
    )
    return plan, key


def resolve(
    root: Path, manifest: dict[str, Any], entry: dict[str, Any], policy: str, cache: EngineCache, say: Say
) -> DeviceEngine:
    """The engine to run for `entry` here: decided, then built and/or verified as needed (see the module)."""
    decision = decide(root, manifest, entry, policy, cache)
    origin = origin_of(entry.get("tensorrt") or {})
    packed = root / entry["file"]
    if decision.action == "packed-unverified":
        say(f"warning: {entry['file']}: {decision.why}")
        return DeviceEngine(packed, "packed", decision.why, origin.version_compatible, origin.dla_core, None, {})
    assert decision.key is not None
    if decision.action in ("packed", "verify-packed"):
        return _packed(root, manifest, entry, decision, cache, say)
    return _built(root, manifest, entry, decision, policy, cache, say)


def _packed(
    root: Path, manifest: dict[str, Any], entry: dict[str, Any], decision: Decision, cache: EngineCache, say: Say
) -> DeviceEngine:
    """The packed engine, verified once per device (the verification is what the cache entry holds)."""
    key = decision.key
    assert key is not None
    origin = origin_of(entry.get("tensorrt") or {})
    packed = root / entry["file"]
    with cache.locked(key, lambda: say("waiting for another process verifying this engine")):
        found = cache.lookup(key)
        if found.entry is not None:
            return DeviceEngine(packed, "packed", decision.why, origin.version_compatible, origin.dla_core,
                                found.entry.verification, {}, found.entry.folder)  # fmt: skip
        _forget_damage(cache, key, found.damaged, say)
        earlier = cache.rejected(key)
        if earlier is not None:  # failed here before: not verified (and copied aside) again at every open
            raise earlier_rejection(entry, earlier, packed=True)
        staging = cache.staging(key)
        start = time.perf_counter()
        record = verify_engine(packed, origin.version_compatible, origin.dla_core, root, manifest, entry, say)
        seconds = {"verify": time.perf_counter() - start}
        report = {"source": "packed", "artifact": entry["file"], "tensorrt": entry.get("tensorrt"), "seconds": seconds}
        if not record["passed"]:
            shutil.copyfile(packed, staging / ENGINE_FILE)
            reject(cache, key, staging, report, record, entry, "packed in the bundle")
        published = cache.publish(key, staging, report, record)
    return DeviceEngine(packed, "packed", decision.why, origin.version_compatible, origin.dla_core, record, seconds,
                        published.folder)  # fmt: skip


def _built(
    root: Path,
    manifest: dict[str, Any],
    entry: dict[str, Any],
    decision: Decision,
    policy: str,
    cache: EngineCache,
    say: Say,
) -> DeviceEngine:
    """The cached engine, or one built now from the bundle's ONNX, verified, then cached."""
    from ghost_deploy.backends.trt.build import build_plan

    key, plan = decision.key, decision.plan
    assert key is not None and plan is not None
    with cache.locked(key, lambda: say("waiting for another process building this engine")):
        found = cache.lookup(key)
        if found.entry is not None and found.entry.engine is not None and policy != "rebuild":
            return _from_entry(found.entry, plan, "cached", decision.why)
        _forget_damage(cache, key, found.damaged, say)
        earlier = cache.rejected(key)
        if earlier is not None and policy != "rebuild":
            raise earlier_rejection(entry, earlier)
        staging = cache.staging(key)
        say(f"building the engine of {entry['file']} for {Machine.here().describe()} (first use on this device)")
        start = time.perf_counter()
        built = build_plan(plan)
        (staging / ENGINE_FILE).write_bytes(bytes(memoryview(built.plan)))
        seconds = {"build": time.perf_counter() - start}
        start = time.perf_counter()
        engine = staging / ENGINE_FILE
        record = verify_engine(engine, plan.version_compatible, plan.dla_core, root, manifest, entry, say)
        seconds["verify"] = time.perf_counter() - start
        report = {"source": "built", "artifact": entry["file"], "plan": plan.to_dict(), "facts": built.facts,
                  "machine": dataclasses.asdict(Machine.here()), "seconds": seconds}  # fmt: skip
        if not record["passed"]:
            reject(cache, key, staging, report, record, entry, "built on this device")
        published = cache.publish(key, staging, report, record)
        return dataclasses.replace(_from_entry(published, plan, "built", decision.why), seconds=seconds)


def _from_entry(found: Any, plan: Any, source: str, why: str) -> DeviceEngine:
    """A cache entry as the engine to run, its bytes read now (the caller holds the entry's lock)."""
    return DeviceEngine(found.engine, source, why, plan.version_compatible, plan.dla_core, found.verification,
                        {}, found.folder, found.engine.read_bytes())  # fmt: skip


def _forget_damage(cache: EngineCache, key: CacheKey, damaged: str | None, say: Say) -> None:
    """A damaged entry is never trusted: removed (the caller rebuilds or re-verifies)."""
    if damaged:
        say(f"warning: the cached engine {cache.folder(key)} is damaged ({damaged}); it is removed and made again")
        cache.remove(key)
