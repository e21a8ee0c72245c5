"""Which artifact of a bundle runs here, and on what: the user's choice, the bundle's default, or the rule.

DEFAULT_RULE is the rule, as `inspect` prints it and the README states it. An artifact that cannot run on this
machine is never chosen silently in place of the one asked for: asking for it by name refuses with the reason
(a TensorRT engine without TensorRT: exit 3; an engine built by the simulator outside that simulation: exit 2).
When the rule passes over such an artifact, the choice says which and why (`Choice.not_here`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ghost_deploy.bundle.errors import EngineMismatchError
from ghost_deploy.errors import GhostDeployError, InputError, MissingDependencyError

DEFAULT_RULE = (
    "the artifact asked for (run --artifact NAME|TARGET, Bundle.open(..., artifact=)); else the bundle's default "
    "(pack --default) when it can run here; else, where TensorRT is installed, the first engine or ONNX packed "
    "for TensorRT (pack --tensorrt); else the first ONNX artifact, on ONNX Runtime"
)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The artifact that runs, on which backend ('onnxruntime' or 'tensorrt'), why, and what the rule passed over."""

    artifact: dict[str, Any]
    backend: str
    why: str
    not_here: tuple[str, ...] = ()


def find_artifact(artifacts: Sequence[dict[str, Any]], wanted: str, what: str = "artifact") -> dict[str, Any]:
    """The artifact whose file name is `wanted`, else the first whose target is; InputError listing them."""
    for entry in artifacts:
        if entry["file"] == wanted:
            return entry
    for entry in artifacts:
        if entry["target"] == wanted:
            return entry
    listed = ", ".join(f"{a['file']} ({a['target']})" for a in artifacts)
    raise InputError(f"{what} {wanted!r} is neither a file nor a target of this bundle; it holds {listed}")


def backend_for(entry: dict[str, Any], tensorrt_here: bool) -> str | None:
    """'tensorrt' or 'onnxruntime' for an artifact on this machine; None when it cannot run here."""
    if entry["kind"] == "engine":
        return "tensorrt" if tensorrt_here else None
    return "tensorrt" if tensorrt_here and entry.get("device_build") else "onnxruntime"


def refusal(entry: dict[str, Any], simulated: bool = False) -> GhostDeployError:
    """Why an engine cannot run on a machine without TensorRT: simulated (by its manifest entry, or `simulated`
    when its file is a simulated plan; exit 2), else the missing extra (exit 3)."""
    trt = entry.get("tensorrt") or {}
    if trt.get("simulated") or simulated:
        return EngineMismatchError(
            f"{entry['file']} was built by a SIMULATED TensorRT {trt.get('version', '?')} (ghost-deploy's test "
            "simulator, GHOST_DEPLOY_SIMULATE_TRT): it is no engine for a GPU; rebuild it on the device "
            f"(bash {entry['file']}.build.sh, or ghost-deploy build)"
        )
    return MissingDependencyError(
        "tensorrt",
        "trt",
        f"Running the TensorRT engine {entry['file']} of this bundle",
        f"{entry['file']} is a TensorRT engine, and TensorRT is not installed here: install the extra "
        "(pip install 'ghost-deploy[trt]') on the device, or choose an ONNX artifact of the bundle",
    )


def choose(
    manifest: dict[str, Any],
    wanted: str | None,
    tensorrt_here: bool,
    simulated: frozenset[str] = frozenset(),
    unfit: Callable[[dict[str, Any]], str | None] | None = None,
) -> Choice:
    """The artifact to run here by DEFAULT_RULE; refuses (with the reason) when the one asked for cannot run.
    `simulated`: the files that are simulated plans whatever the manifest says. `unfit`: why this TensorRT can
    neither use nor build an artifact's engine (None: it can); the rule then passes over it to the next
    candidate (an ONNX packed for TensorRT still runs on ONNX Runtime), while one asked for by name is refused
    later, with that reason, by whoever settles its engine."""
    artifacts = manifest["artifacts"]
    if wanted is not None:
        matches = [a for a in artifacts if a["file"] == wanted] or [a for a in artifacts if a["target"] == wanted]
        if not matches:
            find_artifact(artifacts, wanted)  # raises, listing what the bundle holds
        runnable = [a for a in matches if backend_for(a, tensorrt_here)]
        if not runnable:
            raise refusal(matches[0], matches[0]["file"] in simulated)
        chosen = runnable[0]
        return Choice(chosen, str(backend_for(chosen, tensorrt_here)), f"{chosen['file']}: asked for ({wanted})")
    passed = [_not_here(a, a["file"] in simulated) for a in artifacts if backend_for(a, tensorrt_here) is None]
    reasons: dict[str, str | None] = {}

    def backend(entry: dict[str, Any]) -> str | None:
        found = backend_for(entry, tensorrt_here)
        if found != "tensorrt" or unfit is None:
            return found
        if entry["file"] not in reasons:
            reasons[entry["file"]] = unfit(entry)
            if reasons[entry["file"]]:
                passed.append(f"{entry['file']} ({entry['target']}) is not used here: {reasons[entry['file']]}")
        return found if not reasons[entry["file"]] else ("onnxruntime" if entry["kind"] == "onnx" else None)

    note = ""
    default = manifest.get("default_artifact")
    if default is not None:
        entry = find_artifact(artifacts, default)
        chosen = backend(entry)
        if chosen is not None:
            why = f"{entry['file']}: the bundle's default (pack --default)"
            return Choice(entry, chosen, why, tuple(passed))
        note = f"the bundle's default {default} cannot run here; "
    if tensorrt_here:
        for entry in artifacts:
            if backend(entry) == "tensorrt":
                why = "TensorRT is installed: the first engine, or ONNX packed for TensorRT"
                return Choice(entry, "tensorrt", f"{entry['file']}: {note}{why}", tuple(passed))
    for entry in artifacts:
        if entry["kind"] == "onnx":
            why = "the first ONNX artifact" + ("" if tensorrt_here else " (TensorRT is not installed here)")
            return Choice(entry, "onnxruntime", f"{entry['file']}: {note}{why}", tuple(passed))
    for entry in artifacts:  # nothing else runs here: the first engine, whose settling says why it cannot
        if backend_for(entry, tensorrt_here) == "tensorrt":
            return Choice(entry, "tensorrt", f"{entry['file']}: {note}the only candidate", tuple(passed))
    raise refusal(artifacts[0], artifacts[0]["file"] in simulated)


def unfit_here(root: Path, manifest: dict[str, Any], policy: str, cache: Any) -> Callable[[dict[str, Any]], str | None]:
    """`choose`'s `unfit` for this machine: why an engine can neither be used nor built here (`device.decide`'s
    EngineMismatchError), else None. Builds and verifies nothing."""
    from ghost_deploy.bundle.device import decide

    def why(entry: dict[str, Any]) -> str | None:
        try:
            decide(root, manifest, entry, policy, cache)
        except EngineMismatchError as exc:
            return str(exc)
        return None

    return why


def _not_here(entry: dict[str, Any], simulated: bool) -> str:
    """One line on an artifact that cannot run here, and why."""
    return f"{entry['file']} ({entry['target']}) is not used here: {refusal(entry, simulated)}"


def describe_here(
    root: Path, manifest: dict[str, Any], wanted: str | None, cache_dir: Path | None = None
) -> dict[str, Any]:
    """What would run on this machine and why, building and verifying nothing (what `inspect` prints): the
    artifact, its backend, for an engine the action ('packed', 'verify-packed', 'cached', 'build') or why none
    can run, what the rule passed over, and the rule itself."""
    from ghost_deploy.machine.probe import tensorrt_installed

    out: dict[str, Any] = {"default_rule": DEFAULT_RULE, "default_artifact": manifest.get("default_artifact")}
    try:
        from ghost_deploy.backends.trt.engine_cache import EngineCache

        unfit = unfit_here(root, manifest, "auto", EngineCache(cache_dir))
        choice = choose(manifest, wanted, tensorrt_installed(), simulated_files(root, manifest), unfit)
    except GhostDeployError as exc:
        return {**out, "artifact": None, "backend": None, "why": str(exc), "engine": None, "not_here": []}
    out.update(artifact=choice.artifact["file"], backend=choice.backend, why=choice.why, not_here=list(choice.not_here))
    out["engine"] = None
    if choice.backend == "tensorrt":
        from ghost_deploy.backends.trt.engine_cache import EngineCache
        from ghost_deploy.bundle.device import decide

        cache = EngineCache(cache_dir)
        try:
            decision = decide(root, manifest, choice.artifact, "auto", cache)
            out["engine"] = {"action": decision.action, "why": decision.why, "cache": str(cache.root)}
        except GhostDeployError as exc:
            out["engine"] = {"action": "refused", "why": str(exc), "cache": str(cache.root)}
    return out


def simulated_files(root: Path, manifest: dict[str, Any]) -> frozenset[str]:
    """The engine artifacts whose files are simulated plans, whatever their manifest entries say."""
    from ghost_deploy.testing.trtsim.plan import is_simulated_plan

    engines = [a["file"] for a in manifest["artifacts"] if a["kind"] == "engine"]
    return frozenset(name for name in engines if is_simulated_plan(root / name))
