"""Where a model's own metadata may send ghost-deploy to read images: inside the model file's folder only.

A checkpoint's `ghost_deploy.data` (and the `model.data` of a report beside an ONNX) names the folders of its
test and calibration splits, relative to the file. The file is input, like the weights: whoever wrote it must
not choose what this machine reads. A folder it names is read only when it resolves (symbolic links followed)
inside the model file's own folder tree, or inside the digit images shipped with ghost-deploy (what the shipped
model's metadata names, and what verification falls back to anyway). An absolute path, a `..` escape or a link
leading elsewhere is not read: the run says so in one line and in its report, and falls back as if the metadata
named nothing. `--eval DIR` and `--calib DIR` are how a user points at images anywhere; no flag widens this.
Torch-free.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ghost_deploy.data.shipped import IMAGES, checkout_root
from ghost_deploy.model.info import ModelInfo

__all__ = ["MetadataFolder", "metadata_folder"]

_SHOWN = 120  # characters of a refused value quoted in a message

# who states the folder, by ModelInfo.source: (in a sentence, in a label)
_OWNER = {
    "metadata": ("the checkpoint's metadata", "checkpoint metadata"),
    "report": ("the ONNX's report", "ONNX report"),
}


@dataclasses.dataclass(frozen=True)
class MetadataFolder:
    """One split's folder as the model's metadata names it, and whether it may be read."""

    split: str
    named: str | None  # what the metadata says (None: it names no folder for this split)
    path: Path | None  # the resolved folder, when it is allowed and exists
    refused: str | None  # why a named folder is not read (None: allowed, or nothing named)
    owner: str = "checkpoint metadata"  # who names it, as a label

    @property
    def source(self) -> str:
        """For reports and summaries: 'checkpoint metadata data.test (/abs/folder)'."""
        return f"{self.owner} data.{self.split} ({self.path})"

    @property
    def brief(self) -> str:
        """Why the named folder was not read, in a few words (`refused` says it in full)."""
        return f"{self.owner} data.{self.split} was not read: it is outside the model's folder"


def metadata_folder(info: ModelInfo, split: str, base: Path) -> MetadataFolder:
    """The folder `info.data[split]` names, relative to `base` (the model file's folder), if it may be read.

    Allowed: a folder that resolves inside `base`'s tree or inside the shipped digit images. Anything else is
    refused with the reason (`refused`); a folder that is allowed but missing is simply absent (`path` None)."""
    owner, label = _OWNER.get(info.source, ("the model's metadata", "model metadata"))
    named = info.data.get(split)
    if named is None:
        return MetadataFolder(split, None, None, None, label)
    shown = repr(named if len(named) <= _SHOWN else named[:_SHOWN] + "...")
    try:
        root = base.resolve()
        target = (base / named).resolve()
        inside = any(target.is_relative_to(r) for r in (root, *_shipped_roots()))
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL, a name too long
        why = f"{owner} names data.{split} = {shown}, which cannot be resolved ({type(exc).__name__}); not read"
        return MetadataFolder(split, named, None, why, label)
    if not inside:
        why = (
            f"{owner} names data.{split} = {shown}, which resolves to {target}, outside {root} (the model file's "
            f"folder); not read: a model's metadata may only name folders beside it ({_flag(split)} DIR reads any)"
        )
        return MetadataFolder(split, named, None, why, label)
    return MetadataFolder(split, named, target if target.is_dir() else None, None, label)


def _shipped_roots() -> tuple[Path, ...]:
    """The shipped digit images (in a checkout), which the shipped model's metadata names from `models/`."""
    root = checkout_root()
    folder = root / IMAGES if root is not None else None
    return (folder.resolve(),) if folder is not None and folder.is_dir() else ()


def _flag(split: str) -> str:
    return "--calib" if split == "calibration" else "--eval"
