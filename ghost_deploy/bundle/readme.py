"""The README.md every bundle carries, generated from its manifest: files, input, output, Python, DeepStream."""

from __future__ import annotations

from typing import Any

from ghost_deploy.bundle.deepstream import CONFIG_NAME


def render_readme(manifest: dict[str, Any]) -> str:
    """A short README for the application developer, generated from the manifest."""
    pre, inp, out = manifest["preprocessing"], manifest["input"], manifest["output"]
    mean, std = pre["mean"], pre["std"]
    arts = "\n".join(
        f"- `{a['file']}`: {a['kind']}, target {a['target']}, precision {a['precision']}"
        + (
            f", TensorRT {a['tensorrt']['version']}, compute capability {a['tensorrt']['compute_capability']}"
            if a.get("tensorrt")
            else ""
        )
        for a in manifest["artifacts"]
    )
    return f"""# {manifest["model"].get("arch") or "model"} bundle

Packed by ghost-deploy {manifest["tool"]["version"]} on {manifest["created"]}. Every file's size and sha256 are
in `manifest.json`; `ghost_deploy.bundle.runtime.Bundle.open` checks them.

{arts}

## Input

`{inp["name"]}`: shape {inp["shape"]} ({inp["layout"]}, {inp["dtype"]}, RGB), batch {inp["dynamic_batch"] or "fixed"}.

1. Decode the image as 8-bit RGB (grayscale repeated to three channels, alpha dropped).
2. Resize the shorter side to {pre["resize"]} pixels ({pre["interpolation"]}),
   then centre-crop {pre["crop"]} x {pre["crop"]}.
3. For each channel c (R, G, B) and pixel value p in 0..255:

       y[c] = (p / 255 - mean[c]) / std[c]
       mean = ({mean[0]}, {mean[1]}, {mean[2]})
       std  = ({std[0]}, {std[1]}, {std[2]})

   equivalently y[c] = (p - 255 mean[c]) * 1 / (255 std[c]).
4. Lay out as {inp["layout"]}: channels first.

## Output

`{out["name"]}`: shape {out["shape"]}, logits (no softmax). Class i is line i+1 of `{manifest["labels_file"]}`
({manifest["num_labels"]} classes); scores = softmax(logits).

## Python

    from ghost_deploy.runtime import Bundle
    with Bundle.open("THIS_BUNDLE") as bundle:  # or Bundle.open("THIS_BUNDLE", artifact="TARGET_OR_FILE")
        print(bundle.predict("image.png"))  # the 5 best labels (top_k=N: from 1 to the classes)

{_which_text(manifest)}

## DeepStream

{_deepstream_text(manifest)}
"""


def _deepstream_text(manifest: dict[str, Any]) -> str:
    """What the bundle's README says about DeepStream: the config and its normalisation, or why there is none."""
    if "deepstream" not in manifest:
        return (
            "No nvinfer configuration: this bundle holds only ONNX Runtime's CPU layout (ort-int8), which TensorRT, "
            "and so DeepStream, does not take."
        )
    note = manifest["deepstream"].get("note") or "Its normalisation equals the one above exactly."
    return (
        f"`{CONFIG_NAME}` is an nvinfer classifier configuration (net-scale-factor = 1/(255 std), offsets = "
        f"255 mean).\n{note}"
    )


def _which_text(manifest: dict[str, Any]) -> str:
    """Which artifact runs by default, and how a device gets an engine that fits it."""
    default = manifest.get("default_artifact")
    lines = [
        f"By default `{default}` runs (packed with --default)."
        if default
        else "By default an engine runs where TensorRT is installed, else the first ONNX artifact on ONNX Runtime.",
        "`ghost-deploy inspect THIS_BUNDLE` says what would run on a machine, and why.",
    ]
    if any(a.get("device_build") for a in manifest["artifacts"]):
        lines += [
            "",
            "## On a device whose TensorRT or GPU differs",
            "",
            "The bundle holds the ONNX each TensorRT version builds from and a reference set. Where the packed engine",
            "does not fit, the runtime builds one from the ONNX, verifies it against the reference set before any",
            "result is returned, and caches it (`ghost-deploy cache list`). Do it ahead of time with",
            '`ghost-deploy prepare THIS_BUNDLE`; `Bundle.open(..., engine="never")` refuses to build at start.',
        ]
    return "\n".join(lines)
