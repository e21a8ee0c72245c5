"""What ghost-deploy knows about a model: architecture, classes, input, preprocessing, labels, data.

Stored under the key `ghost_deploy` of our own checkpoints (plain types only, so
`torch.load(weights_only=True)` reads it), and copied into every report. Torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ghost_deploy.config import Overrides
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import CheckpointError, InputError
from ghost_deploy.jsonshape import control_character
from ghost_deploy.model.variants import check_input_size, family_of, get_variant

METADATA_KEY = "ghost_deploy"
METADATA_VERSION = 1


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
    def from_dict(cls, data: dict[str, Any], source: str = "metadata") -> ModelInfo:
        """Read the form written by `to_dict`; a malformed entry is a CheckpointError."""
        try:
            labels = data.get("labels")
            return cls(
                arch=str(data["arch"]),
                width=float(data["width"]),
                num_classes=int(data["num_classes"]),
                input_size=int(data["input_size"]),
                preprocessing=Preprocessing.from_dict(data["preprocessing"]),
                labels=tuple(str(x) for x in labels) if labels is not None else None,
                data={str(k): str(v) for k, v in dict(data.get("data") or {}).items()},
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint's '{METADATA_KEY}' metadata is malformed ({exc!r}); "
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
        if ov.num_classes < 1:
            raise InputError(f"--num-classes must be at least 1, got {ov.num_classes}")
        info = info.replace(num_classes=ov.num_classes)
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
