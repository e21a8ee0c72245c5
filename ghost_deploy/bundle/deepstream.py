"""A DeepStream `nvinfer` configuration for a classifier, from a bundle's manifest.

nvinfer normalises each channel as y = net-scale-factor * (x - offset[c]) on 0..255 pixels, while our
preprocessing computes y = (x / 255 - mean[c]) / std[c] = (x - 255 mean[c]) / (255 std[c]). So offset[c] =
255 mean[c] exactly, and net-scale-factor = 1 / (255 std) exactly only when std is the same for the three
channels. With per-channel std there is one scale factor for three: we use the mean std, say so in the
config and the pack report, and record `exact: false` in the manifest (never silently).

nvinfer scales the whole frame to infer-dims; our preprocessing resizes the shorter side and centre-crops.
They agree when resize equals crop and frames are square; otherwise the config says what differs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

CONFIG_NAME = "config_infer_primary.txt"
_NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
_SCALING_FILTER = {"bilinear": 1, "bicubic": 2}  # NvBufSurfTransform_Inter: 1 bilinear, 2 GPU cubic


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """DeepStream's per-channel normalisation, and whether it equals ours exactly."""

    net_scale_factor: float
    offsets: tuple[float, float, float]
    exact: bool
    note: str


def normalisation(mean: tuple[float, float, float], std: tuple[float, float, float]) -> Normalisation:
    """net-scale-factor and offsets that reproduce (x/255 - mean)/std; inexact when std differs per channel."""
    offsets = (255.0 * mean[0], 255.0 * mean[1], 255.0 * mean[2])
    exact = max(std) - min(std) <= 1e-12 * max(std)
    used = std[0] if exact else sum(std) / 3.0
    note = (
        ""
        if exact
        else f"std {list(std)} differs per channel but nvinfer has one net-scale-factor: it uses the mean std "
        f"{used:.6g}, so DeepStream's inputs differ from ours by up to {_max_rel_error(std, used):.1%} per channel"
    )
    return Normalisation(1.0 / (255.0 * used), offsets, exact, note)


def _max_rel_error(std: tuple[float, float, float], used: float) -> float:
    return max(abs(s / used - 1.0) for s in std)


def deepstream_normalise(pixels: Any, norm: Normalisation) -> Any:
    """What nvinfer computes on HxWx3 0..255 pixels (float32), for tests and for users who check by hand."""
    import numpy as np

    x = np.asarray(pixels, dtype=np.float32)
    return np.float32(norm.net_scale_factor) * (x - np.asarray(norm.offsets, dtype=np.float32))


def render_config(manifest: dict[str, Any], artifact: dict[str, Any], cache: str | None) -> tuple[str, Normalisation]:
    """The text of config_infer_primary.txt for `artifact` (an entry of the manifest's artifacts)."""
    pre = manifest["preprocessing"]
    norm = normalisation(tuple(pre["mean"]), tuple(pre["std"]))  # type: ignore[arg-type]
    shape = manifest["input"]["shape"]
    dyn = manifest["input"]["dynamic_batch"]
    batch = dyn["opt"] if dyn else max(1, shape[0])
    lines = [
        "# DeepStream nvinfer configuration written by ghost-deploy pack (see README.md in this bundle)",
        "# nvinfer computes y = net-scale-factor * (pixel - offset[c]) on 0..255 RGB pixels;",
        f"# ours is y = (pixel/255 - mean[c]) / std[c] with mean {pre['mean']}, std {pre['std']}",
    ]
    if not norm.exact:
        lines.append(f"# WARNING: {norm.note}")
    if pre["resize"] != pre["crop"]:
        lines.append(
            f"# NOTE: we resize the shorter side to {pre['resize']} and centre-crop {pre['crop']}; nvinfer scales "
            "the whole frame (or object) to infer-dims. Crop upstream to match."
        )
    lines += [
        "[property]",
        "gpu-id=0",
        f"net-scale-factor={norm.net_scale_factor!r}",
        "offsets=" + ";".join(repr(o) for o in norm.offsets),
        "model-color-format=0",
        f"infer-dims={shape[1]};{shape[2]};{shape[3]}",
        f"batch-size={batch}",
        "network-type=1",
        "process-mode=1",
        "gie-unique-id=1",
        f"network-mode={_NETWORK_MODE[artifact['precision']]}",
        f"labelfile-path={manifest['labels_file']}",
        f"output-blob-names={manifest['output']['name']}",
        "classifier-threshold=0.0",
        "maintain-aspect-ratio=0",
        f"scaling-filter={_SCALING_FILTER.get(pre['interpolation'], 1)}",
    ]
    lines += _model_lines(artifact, batch)
    if cache is not None and artifact["precision"] == "int8":
        lines.append(f"int8-calib-file={cache}")
    return "\n".join(lines) + "\n", norm


def _model_lines(artifact: dict[str, Any], batch: int) -> list[str]:
    """model-engine-file and/or onnx-file: with both, nvinfer builds from the ONNX where the engine does not fit
    this device (as DeepStream does), and that build is not verified; `ghost-deploy prepare` is."""
    graphs = (artifact.get("device_build") or {}).get("onnx") or {}
    # DeepStream 6/7 run TensorRT 8.5-10.x (weakly typed): the graph for flags first
    onnx = (graphs.get("weak") or graphs.get("strong") or {}).get("file")
    if artifact["kind"] == "onnx":
        onnx = onnx or artifact["file"]
    lines = []
    if artifact["kind"] == "engine":
        lines.append(f"model-engine-file={artifact['file']}")
    if onnx is not None:
        lines.append(f"onnx-file={onnx}")
        lines.append(
            "# nvinfer builds and caches an engine from onnx-file when no engine fits this device; that build is "
            "NOT verified (ghost-deploy prepare builds and verifies one against the bundle's reference set)"
        )
        if artifact["kind"] == "onnx":
            lines.append(f"# nvinfer writes the engine it builds beside the ONNX: {onnx}_b{batch}_gpu0_*.engine")
    return lines


def parse_config(text: str) -> dict[str, str]:
    """key=value pairs of a [property] section (comments skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out
