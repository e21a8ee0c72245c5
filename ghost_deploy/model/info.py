"""What ghost-deploy knows about a model: architecture, classes, input, preprocessing, labels, data.

Stored under the key `ghost_deploy` of our own checkpoints (plain types only, so
`torch.load(weights_only=True)` reads it), and copied into every report. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ghost_deploy.config import MAX_CLASSES, MAX_INPUT_SIZE, Overrides
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import CheckpointError, InputError
from ghost_deploy.jsonshape import control_character
from ghost_deploy.model.variants import check_input_size, family_of, get_variant

METADATA_KEY = "ghost_deploy"
METADATA_VERSION = 1

# Bounds of what a model's metadata (a checkpoint's `ghost_deploy` entry, an ONNX's report) may say, the same
# as the flags that say it: --num-classes (MAX_CLASSES), --input-size (MAX_INPUT_SIZE), --resize (Preprocessing's
# MAX_SIDE). Width: the widest GhostNet the width inference knows (4.0x, ~60M parameters at 1000 classes).
# Labels: one per class, each at most MAX_LABEL_CHARS. Data folders: at most MAX_DATA_FOLDERS, each a path of at
# most MAX_PATH_CHARS (PATH_MAX). Checked before any tensor is sized from them.
MAX_WIDTH = 4.0
MAX_LABEL_CHARS = 1000
MAX_ARCH_CHARS = 64
MAX_DATA_FOLDERS = 16
MAX_PATH_CHARS = 4096


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Architecture and I/O contract of a model.

    `data` maps split names ('train', 'calibration', 'test') to image folders, relative to the checkpoint.
    `arch` is a registry name (`ghostnet_100`) or 'custom' for a trusted arbitrary classifier.
    """

    arch: str
    width: float
    num_classes: int
    input_size: int
    preprocessing: Preprocessing
    labels: tuple[str, ...] | None = None
    data: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "metadata"  # where the architecture came from: metadata, flags, inferred, trusted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also what is saved in checkpoints)."""
        return {
            "version": METADATA_VERSION,
            "arch": self.arch,
            "width": self.width,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "preprocessing": self.preprocessing.to_dict(),
            "labels": list(self.labels) if self.labels is not None else None,
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "metadata", origin: object = None) -> ModelInfo:
        """Read the form written by `to_dict`; a malformed or out-of-bounds entry is a CheckpointError (naming
        `origin`, the file it came from, when given).

        Every field is bounded as the flag that sets it is (the MAX_* above), before anything is sized from it:
        a file's metadata never asks for more than a user could on the command line."""
        where = (f"{origin}: " if origin is not None else "") + STATED_BY.get(source, "the model's description")
        if not isinstance(data, dict):
            raise CheckpointError(f"{where} is a {type(data).__name__}, not a mapping; remove it or fix it")
        try:
            labels = _labels(data.get("labels"))
            return cls(
                arch=_text(data["arch"], "arch", MAX_ARCH_CHARS),
                width=_width(data["width"]),
                num_classes=_integer(data["num_classes"], "num_classes", 1, MAX_CLASSES),
                input_size=_integer(data["input_size"], "input_size", 1, MAX_INPUT_SIZE),
                preprocessing=Preprocessing.from_dict(data["preprocessing"]),
                labels=labels,
                data=_data_folders(data.get("data")),
                source=source,
            )
        except _Bad as exc:
            raise CheckpointError(f"{where} is out of bounds: {exc}; fix it, or remove it and pass the flags") from None
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise CheckpointError(
                f"{where} ('{METADATA_KEY}') is malformed ({_short(exc)}); "
                "remove it or pass --arch/--num-classes/--input-size"
            ) from None

    @property
    def family(self) -> str:
        """'v1', 'v2' or 'v3' (from the architecture name; 'custom' counts as 'v1')."""
        return family_of(self.arch)

    def replace(self, **changes: Any) -> ModelInfo:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# where a model's facts come from when the file states them: a flag may not contradict these (exit 2)
STATED_BY = {
    "metadata": "the checkpoint's metadata",
    "report": "the ONNX's ghost-deploy report",
    "onnx": "the ONNX's input shape",
}


def apply_overrides(info: ModelInfo, ov: Overrides) -> ModelInfo:
    """Apply command-line overrides of classes, input size, preprocessing and labels, and validate them.

    Where the file states the input size and classes (our metadata, a report, an ONNX's shape), a flag that
    contradicts them is refused (InputError) rather than obeyed: the model was trained for what its file says."""
    _check_not_contradicted(info, ov)
    if ov.arch is not None and info.source == "metadata":
        variant = get_variant(ov.arch)
        info = info.replace(arch=variant.name, width=variant.width, source="flags")
    if ov.num_classes is not None:
        if not 1 <= ov.num_classes <= MAX_CLASSES:
            raise InputError(f"--num-classes must be between 1 and {MAX_CLASSES}, got {ov.num_classes}")
        info = info.replace(num_classes=ov.num_classes)
    if not 1 <= info.num_classes <= MAX_CLASSES:
        where = STATED_BY.get(info.source, "the model")
        raise InputError(f"{where} says {info.num_classes} classes; a model may have 1 to {MAX_CLASSES}")
    if ov.input_size is not None and ov.crop is not None and ov.input_size != ov.crop:
        raise InputError(f"--input-size {ov.input_size} and --crop {ov.crop} differ; the crop is the input size")
    size = ov.input_size or ov.crop
    pre = info.preprocessing
    if size is not None and size != info.input_size:
        check_input_size(size, info.family)
        ratio = pre.resize / pre.crop
        pre = Preprocessing(round(size * ratio), size, pre.mean, pre.std, pre.interpolation)
        info = info.replace(input_size=size)
    pre = pre.replace(resize=ov.resize, mean=ov.mean, std=ov.std, interpolation=ov.interpolation)
    if ov.resize is not None and ov.resize < pre.crop:
        raise InputError(f"--resize {ov.resize} is smaller than the crop {pre.crop}; resize must be at least crop")
    check_input_size(info.input_size, info.family)
    info = info.replace(preprocessing=pre)
    labels = ov.labels if ov.labels is not None else info.labels
    given = "--labels" if ov.labels is not None else STATED_BY.get(info.source, "the model's description")
    _check_labels_are_lines(labels or (), given)
    if labels is not None and len(labels) != info.num_classes:
        raise InputError(
            f"{len(labels)} labels for a model with {info.num_classes} classes (labels from {given}); "
            "give one per class"
        )
    return info.replace(labels=labels)


def _check_not_contradicted(info: ModelInfo, ov: Overrides) -> None:
    """InputError when --input-size/--crop or --num-classes contradict what the file states."""
    stated = STATED_BY.get(info.source)
    if stated is None:  # defaults or flags: nothing to contradict
        return
    flag, size = ("--input-size", ov.input_size) if ov.input_size is not None else ("--crop", ov.crop)
    if size is not None and size != info.input_size:
        raise InputError(
            f"{flag} {size} contradicts {stated}, which says {info.input_size} x {info.input_size} inputs: "
            f"drop {flag} (a model runs at the input size its file states)"
        )
    known_classes = info.source != "onnx" or info.num_classes > 1  # an ONNX with a dynamic output says nothing
    if ov.num_classes is not None and ov.num_classes != info.num_classes and known_classes:
        raise InputError(
            f"--num-classes {ov.num_classes} contradicts {stated}, which says {info.num_classes} classes: "
            "drop --num-classes"
        )


def _check_labels_are_lines(labels: tuple[str, ...], given: str) -> None:
    """InputError naming the first label with a control character (a newline, a tab, an escape): labels are
    written one per line (a bundle's labels.txt, DeepStream's label file) and shown on terminals."""
    for index, label in enumerate(labels):
        bad = control_character(label)
        if bad is not None:
            raise InputError(
                f"label {index} ({label[:40]!r}, from {given}) has a control character ({bad}); a label is one "
                "line of plain text: remove it"
            )


class _Bad(ValueError):
    """A metadata value of the right type outside its bounds."""


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _text(value: object, name: str, longest: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value or len(value) > longest:
        raise _Bad(f"{name} must be 1 to {longest} characters, got {len(value)}")
    return value


def _integer(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r:.40}")
    if not low <= value <= high:
        raise _Bad(f"{name} {value} is outside {low}..{high}")
    return value


def _width(value: object) -> float:
    """0 is the width of a model that is not a GhostNet (a trusted module, an ONNX); a GhostNet's is above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"width must be a number, got {value!r:.40}")
    if not (math.isfinite(value) and 0 <= value <= MAX_WIDTH):
        raise _Bad(f"width {value!r} is not a finite number in 0..{MAX_WIDTH:g}")
    return float(value)


def _labels(value: object) -> tuple[str, ...] | None:
    """Class names: at most MAX_CLASSES strings (their count must then equal num_classes), each bounded."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"labels must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_CLASSES:
        raise _Bad(f"{len(value)} labels, more than the {MAX_CLASSES} classes a model may have")
    for i, label in enumerate(value):
        if not isinstance(label, str):
            raise TypeError(f"label {i} is a {type(label).__name__}, not a string")
        if len(label) > MAX_LABEL_CHARS:
            raise _Bad(f"label {i} has {len(label)} characters (at most {MAX_LABEL_CHARS})")
    return tuple(value)


def _data_folders(value: object) -> dict[str, str]:
    """Split name -> folder (relative to the model file; where they may point is `model.datapaths`' concern)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"data must be a mapping of split names to folders, got {type(value).__name__}")
    if len(value) > MAX_DATA_FOLDERS:
        raise _Bad(f"data names {len(value)} folders (at most {MAX_DATA_FOLDERS})")
    for key, folder in value.items():
        _text(key, "a data split name", MAX_ARCH_CHARS)
        _text(folder, f"data.{key}", MAX_PATH_CHARS)
        if "\0" in folder:
            raise _Bad(f"data.{key} holds a NUL character")
    return dict(value)
