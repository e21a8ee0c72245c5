"""`ghost-deploy doctor --selftest`: the acceptance run of a device, in one command and one file to send back.

On a Jetson or a desktop GPU with TensorRT, it builds the shipped model's trt-fp32, trt-fp16 and trt-int8 engines,
verifies each against ONNX Runtime on the CPU, profiles each like trtexec, once plainly and once with the enqueue
captured in a CUDA graph (`--cuda-graph`), and writes one JSON with the machine (`doctor`'s facts and the timing
environment), every result and every error, whatever fails along the way. A CUDA graph that cannot be made fails
the target; one not tried for want of cuda-python is recorded as not run (with the command to install it).
Under the simulator (GHOST_DEPLOY_SIMULATE_TRT) it runs the same and the file says it was simulated.
"""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Any

from ghost_deploy.config import ExportConfig, PrecisionConfig
from ghost_deploy.data.shipped import MODEL, checkout_root
from ghost_deploy.errors import GhostDeployError, InputError, MissingDependencyError, VerificationFailed
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.machine import probe
from ghost_deploy.report import Steps, new_report
from ghost_deploy.targets import ENGINE_TARGETS

DEFAULT_OUTPUT = Path("ghost-deploy-selftest.json")


def shipped_model() -> Path:
    """The shipped digits model of the checkout this package runs from; InputError without a checkout."""
    root = checkout_root()
    if root is None or not (root / MODEL).is_file():
        raise InputError(
            "the self-test runs the shipped model, which comes with a checkout of the repository: run it from a "
            "clone (git clone ... && pip install -e .), or pass --model MODEL.pt"
        )
    return root / MODEL


def selftest(
    output: Path = DEFAULT_OUTPUT,
    model: Path | None = None,
    duration_s: float = 1.0,
    command: tuple[str, ...] = (),
    steps: Steps | None = None,
) -> dict[str, Any]:
    """Build, verify and profile every engine target of `model` (default: the shipped one); write `output`.

    Raises VerificationFailed (exit 4) after writing when any target failed, MissingDependencyError (exit 3)
    before any work when there is no TensorRT.
    """
    steps = steps or Steps()
    model = model or shipped_model()
    check_writable(output)
    if not probe.tensorrt_installed():
        raise MissingDependencyError("tensorrt", "trt", "The self-test (it builds TensorRT engines)")
    from ghost_deploy.machine.doctor import diagnose
    from ghost_deploy.profiling.stats import environment

    report = new_report(list(command), "selftest")
    report.update(model=str(model), simulated=probe.simulation() is not None, machine=diagnose())
    report["environment"] = environment()
    with tempfile.TemporaryDirectory(prefix="ghost-selftest-") as work:
        report["results"] = [_one(model, target, Path(work), duration_s, steps) for target in ENGINE_TARGETS]
    report["passed"] = all(r["status"] == "passed" for r in report["results"])
    write_json_atomic(output, report)
    report["report_file"] = str(output)
    if not report["passed"]:
        failed = ", ".join(f"{r['target']} ({r['status']})" for r in report["results"] if r["status"] != "passed")
        raise VerificationFailed(f"self-test: {failed}; every detail is in {output}: send it back", report)
    return report


def _one(model: Path, target: str, work: Path, duration_s: float, steps: Steps) -> dict[str, Any]:
    """One target: export (build and verify), then profile; any failure is recorded, never raised."""
    from ghost_deploy.profiling.profile import ProfileConfig, profile_artifact
    from ghost_deploy.profiling.stats import LoopConfig
    from ghost_deploy.stages.export_engine import export_engine

    engine = work / f"selftest.{target}.engine"
    entry: dict[str, Any] = {"target": target}
    steps.say(f"[selftest] {target}: build and verify ...")
    try:
        cfg = ExportConfig(target=target, output=engine, precision=PrecisionConfig(calib_method="minmax"))
        result = export_engine(model, cfg, steps)
        entry.update(verification=result.report["verification"], engine=result.report["engine"])
        entry["build_plan"] = result.report["build_plan"]
        steps.say(f"[selftest] {target}: profile ...")
        profile = profile_artifact(engine, ProfileConfig(loop=LoopConfig(200.0, duration_s), layer_runs=5))
        entry["profile"] = [{k: v for k, v in r.items() if k != "queries"} for r in profile["results"]]
        entry["status"] = "passed"
        steps.say(f"[selftest] {target}: profile with a CUDA graph ...")
        entry["cuda_graph"] = _cuda_graph_profile(engine, duration_s)
        if entry["cuda_graph"]["status"] == "error":
            entry.update(status="error", error=f"--cuda-graph: {entry['cuda_graph']['error']}")
    except VerificationFailed as exc:
        entry.update(status="failed", error=str(exc), report=getattr(exc.result, "report", exc.result))
    except GhostDeployError as exc:
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # the file must reach us whatever broke: keep the traceback
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    return entry


def _cuda_graph_profile(engine: Path, duration_s: float) -> dict[str, Any]:
    """The engine profiled with `--cuda-graph`: passed with the summary, not run without cuda-python, or error."""
    from ghost_deploy.profiling.profile import ProfileConfig, profile_artifact
    from ghost_deploy.profiling.stats import LoopConfig

    cfg = ProfileConfig(loop=LoopConfig(200.0, duration_s), layer_runs=0, cuda_graph=True)
    try:
        results = profile_artifact(engine, cfg)["results"]
    except MissingDependencyError as exc:
        return {"status": "not run", "reason": str(exc)}
    except GhostDeployError as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "passed", "profile": [{k: v for k, v in r.items() if k != "queries"} for r in results]}
