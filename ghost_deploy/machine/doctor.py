"""`ghost-deploy doctor`: what this machine has for each target, and what is missing.

Reads package metadata, `nvidia-smi`, `/etc/nv_tegra_release` and `/proc/device-tree/model`; imports
tensorrt and pycuda only when they are installed (to read DLA cores and the CUDA driver), never torch.
"""

from __future__ import annotations

import platform
import sys
from importlib import util
from typing import Any

from ghost_deploy.machine.probe import distribution_version, gpus, jetson, simulation, tensorrt_version


def _tensorrt_details() -> dict[str, Any]:
    """Version and DLA cores from the TensorRT bindings, when they import."""
    try:
        if "tensorrt" not in sys.modules and util.find_spec("tensorrt") is None:
            return {}
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        return {"bindings": trt.__version__, "dla_cores": int(builder.num_DLA_cores)}
    except Exception as exc:  # a broken CUDA install surfaces here in many forms
        return {"bindings_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def diagnose() -> dict[str, Any]:
    """Everything `doctor` reports, as a dict."""
    import onnxruntime as ort

    trt_version = tensorrt_version()
    sim = simulation()
    facts: dict[str, Any] = {
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "gpus": [g.to_dict() for g in gpus()],
        "jetson": jetson(),
        "tensorrt": trt_version,
        "tensorrt_simulated": sim is not None,
        "tensorrt_details": _tensorrt_details() if trt_version else {},
        "pycuda": "simulated" if sim is not None else distribution_version("pycuda"),
        # --cuda-graph's stream capture (pycuda has none): cuda-python, or its cuda-bindings part alone
        "cuda_python": "simulated" if sim is not None else distribution_version("cuda-python", "cuda-bindings"),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "torch": distribution_version("torch"),
        "onnxsim": distribution_version("onnxsim"),
    }
    facts["targets"] = _targets(facts)
    facts["notes"] = _notes(facts)
    return facts


def _notes(f: dict[str, Any]) -> list[str]:
    """What a user of this machine should know before going on."""
    notes = []
    jetson_info = f["jetson"] or {}
    if "R35" in str(jetson_info.get("l4t", "")) or str(f["tensorrt"] or "").startswith("8.5"):
        notes.append(
            "JetPack 5 (L4T R35) ships TensorRT 8.5 with Python bindings for Python 3.8 only, and ghost-deploy needs "
            "3.10+: build engines here with the <engine>.build.sh that ghost-export writes (trtexec), and run them "
            "with DeepStream (config_infer_primary.txt in every bundle) or your C++ application"
        )
    if f.get("tensorrt_simulated"):
        notes.append("TensorRT and the GPU are SIMULATED (GHOST_DEPLOY_SIMULATE_TRT): for tests, not for a device")
    elif not f["tensorrt"] and not f.get("gpus") and not f.get("jetson"):  # on a device: install the trt extra
        notes.append(
            "no TensorRT here: to run every trt-* path anyway, set GHOST_DEPLOY_SIMULATE_TRT=10.3 (or 8.6, 10.13, "
            "11.1; GHOST_DEPLOY_SIMULATE_GPU=orin for a Jetson): a simulated TensorRT builds and runs engines on "
            "ONNX Runtime CPU, every result labelled SIMULATED; speed and memory need the device"
        )
    return notes


def _targets(f: dict[str, Any]) -> dict[str, str]:
    export = (
        "ok" if f["torch"] and f["onnxsim"] else "from .pt needs the export extra: pip install 'ghost-deploy[export]'"
    )
    trt_missing = [
        n
        for n, ok in (("a GPU", f["gpus"] or f["jetson"]), ("TensorRT", f["tensorrt"]), ("pycuda", f["pycuda"]))
        if not ok
    ]
    trt = (
        "ok"
        if not trt_missing
        else "missing "
        + ", ".join(trt_missing)
        + (
            "; install the trt extra on the device: pip install 'ghost-deploy[trt]'"
            if f["gpus"] or f["jetson"]
            else "; build on the device with the <artifact>.build.sh script that ghost-export writes"
        )
    )
    return {"onnx, onnx-fp16, onnx-int8, ort-int8": export, "trt-fp32, trt-fp16, trt-int8": trt}


def render(facts: dict[str, Any]) -> str:
    """The human report of `diagnose()`."""
    lines = [f"machine: {facts['machine']}"]
    if facts["gpus"]:
        for gpu in facts["gpus"]:
            lines.append(f"GPU: {gpu['name']}, compute capability {gpu['compute_capability']}, driver {gpu['driver']}")
    else:
        lines.append("GPU: none found (no nvidia-smi answer)")
    jet = facts["jetson"]
    lines.append(
        f"Jetson: {jet['model'] if jet and 'model' in jet else 'yes' if jet else 'no'}"
        + (f" ({jet['l4t']})" if jet else "")
    )
    details = facts["tensorrt_details"]
    lines.append(
        f"TensorRT: {facts['tensorrt'] or 'not installed'}"
        + (f", {details['dla_cores']} DLA cores" if "dla_cores" in details else "")
        + (f" (bindings fail: {details['bindings_error']})" if "bindings_error" in details else "")
    )
    lines.append(f"pycuda: {facts['pycuda'] or 'not installed'}")
    graph = facts.get("cuda_python") or "not installed (profile --cuda-graph needs it: pip install 'cuda-python==12.*')"
    lines.append(f"cuda-python: {graph}")
    lines.append(f"ONNX Runtime: {facts['onnxruntime']}, providers {', '.join(facts['onnxruntime_providers'])}")
    lines.append(f"torch: {facts['torch'] or 'not installed'}, onnxsim: {facts['onnxsim'] or 'not installed'}")
    lines.append("targets:")
    lines += [f"  {name}: {state}" for name, state in facts["targets"].items()]
    lines += [f"note: {note}" for note in facts.get("notes", [])]
    return "\n".join(lines)
