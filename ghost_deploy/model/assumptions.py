"""What ghost-deploy assumes about a model whose file does not say, and what other tools' checkpoints say.

A checkpoint without ghost-deploy's metadata (a plain `torch.save(model.state_dict())`, a timm or training-script
checkpoint) says nothing of its input size, preprocessing or class names: the registered variant's ImageNet
defaults are used. `assumed_defaults` lists each default taken, for the line every export prints and the
report records. Other tools often store some of these facts beside the weights (`args.img_size`,
`hyper_parameters.num_classes`, `class_names`, ...): `foreign_hints` reads them (plain values only, never
code), and `check_hints` refuses an export whose flags or defaults contradict them (exit 2), naming the flag
that fixes it. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ghost_deploy.config import Overrides
from ghost_deploy.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ghost_deploy.errors import CheckpointError
from ghost_deploy.model.info import ModelInfo

# where other tools keep their settings beside the weights, and the names they give each fact
CONTAINERS = ("args", "hparams", "hyper_parameters", "config", "cfg", "pretrained_cfg", "data_config", "meta")
HINT_KEYS = {
    "input_size": ("input_size", "img_size", "image_size", "resolution"),
    "num_classes": ("num_classes", "n_classes", "nb_classes"),
    "labels": ("class_names", "classes", "labels", "idx_to_class"),
    "mean": ("mean",),
    "std": ("std",),
}
Hints = dict[str, tuple[str, Any]]  # fact -> (where it was found, its value)


def assumed_defaults(info: ModelInfo, ov: Overrides, why: str, hints: Hints | None = None) -> dict[str, str]:
    """Each fact of `info` that came from a default rather than from the file or a flag, described for a user
    (with the class names another tool stored, in `hints`, offered for --labels)."""
    pre = info.preprocessing
    found: dict[str, str] = {}
    if ov.input_size is None and ov.crop is None and info.source != "onnx":  # an ONNX states its input shape
        found["input_size"] = f"{info.input_size} x {info.input_size} ({why}; set with --input-size)"
    if None in (ov.resize, ov.mean, ov.std, ov.interpolation):
        whose = "ImageNet's; " if (pre.mean, pre.std) == (IMAGENET_MEAN, IMAGENET_STD) else ""
        found["preprocessing"] = (
            f"resize {pre.resize} {pre.interpolation}, centre crop {pre.crop}, mean {_triple(pre.mean)}, "
            f"std {_triple(pre.std)} ({whose}set with --resize, --interpolation, --mean, --std)"
        )
    if ov.labels is None and info.labels is None:
        offered = (hints or {}).get("labels")
        names = f"; {offered[0]} lists {_show(offered[1])}" if offered else ""
        found["labels"] = (
            f"none, classes numbered 0..{info.num_classes - 1} (set with --labels FILE, one per line{names})"
        )
    return found


def describe_assumed(path: Path, assumed: Mapping[str, str]) -> str:
    """The note printed at the start of an export: what `path` does not say and what is used instead."""
    lines = [f"note: {path.name} does not state these, so defaults stand in (check them):"]
    lines += [f"  {name.replace('_', ' ')}: {text}" for name, text in assumed.items()]
    return "\n".join(lines)


def foreign_hints(obj: Mapping[str, Any]) -> Hints:
    """The input size, classes, labels, mean and std another tool stored beside the weights (top level, or one
    level down under CONTAINERS); only plain values are read, anything else is ignored."""
    places: list[tuple[str, Mapping[str, Any]]] = [("the checkpoint", obj)]
    for key in CONTAINERS:
        inner = _as_mapping(obj.get(key))
        if inner is not None:
            places.append((f"the checkpoint's '{key}'", inner))
    found: Hints = {}
    for where, mapping in places:
        for fact, keys in HINT_KEYS.items():
            for key in keys:
                value = _parse(fact, mapping.get(key)) if fact not in found else None
                if value is not None:
                    found[fact] = (f"{key} in {where}", value)
    return found


def check_hints(hints: Hints, info: ModelInfo, ov: Overrides, path: Path) -> None:
    """CheckpointError (exit 2) when what the checkpoint stores contradicts what the export would use."""
    for fact, (where, value) in hints.items():
        problem = _contradiction(fact, value, info, ov)
        if problem is not None:
            raise CheckpointError(f"{path} says {where} = {_show(value)}, but {problem}")


def _contradiction(fact: str, value: Any, info: ModelInfo, ov: Overrides) -> str | None:
    """What in `info` contradicts the hint, with the fix; None when it agrees."""
    pre = info.preprocessing
    if fact == "input_size" and value != info.input_size:
        if ov.input_size is None and ov.crop is None:
            return f"ghost-deploy would assume {info.input_size} x {info.input_size} inputs; pass --input-size {value}"
        return f"--input-size gives {info.input_size}; pass --input-size {value}, or fix the checkpoint"
    if fact == "num_classes" and value != info.num_classes:
        return f"the model has {info.num_classes} classes (its classifier's rows): the file contradicts itself"
    if fact == "labels" and len(value) != info.num_classes:
        return f"the model has {info.num_classes} classes: give one label per class with --labels FILE"
    if fact == "labels" and info.labels is not None and tuple(info.labels) != tuple(value):
        return f"--labels gives {_show(info.labels)}; pass the checkpoint's names, or fix the checkpoint"
    for name, ours in (("mean", pre.mean), ("std", pre.std)):
        if fact == name and not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(value, ours, strict=True)):
            flag = f"--{name} {','.join(f'{v:g}' for v in value)}"
            given = getattr(ov, name) is not None
            return (
                f"--{name} gives {_triple(ours)}; pass {flag}"
                if given
                else f"the default is {_triple(ours)}; pass {flag}"
            )
    return None


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """A dict, or the attributes of an argparse Namespace (present only in a checkpoint loaded as trusted)."""
    if isinstance(value, Mapping):
        return value
    if type(value).__name__ == "Namespace":
        attributes: dict[str, Any] = vars(value)
        return attributes
    return None


def _parse(fact: str, value: Any) -> Any:
    """The hint as a plain value (int, tuple of names, triple of floats), or None when it is not one."""
    if value is None or isinstance(value, bool):
        return None
    if fact == "input_size":
        sizes = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
        square = [s for s in sizes[-2:] if isinstance(s, int) and not isinstance(s, bool)]
        return square[0] if square and len(set(square)) == 1 and square[0] > 0 else None
    if fact == "num_classes":
        return value if isinstance(value, int) and value > 0 else None
    if fact == "labels":
        if isinstance(value, Mapping) and all(isinstance(k, int) for k in value):
            value = [value[k] for k in sorted(value)]
        ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
        return tuple(value) if ok else None
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    return None


def _triple(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _show(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        shown = ", ".join(value[:6]) + (f", ... ({len(value)})" if len(value) > 6 else "")
        return f"[{shown}]"
    if isinstance(value, tuple):
        return _triple(value)
    return str(value)
