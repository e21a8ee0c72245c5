"""Which images verification runs on: the user's folder, the model's own test split, or shipped images.

The report always says which, and says so plainly when none of the user's images was used.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from ghost_deploy.data.inputs import ImageFolder, RandomInputs, Sample
from ghost_deploy.data.shipped import shipped_images
from ghost_deploy.model.info import ModelInfo

FALLBACK_IMAGES = 32
FALLBACK_RANDOM = 16


@dataclasses.dataclass
class EvalData:
    """An iterable of samples plus a description for the report."""

    sources: list[Iterable[Sample]]
    description: dict[str, Any]

    def __iter__(self) -> Iterator[Sample]:
        return itertools.chain.from_iterable(self.sources)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources if isinstance(s, Sized))


def eval_data(
    info: ModelInfo, base_dir: Path, eval_dir: Path | None, limit: int | None = 500, seed: int = 0
) -> EvalData:
    """Choose verification inputs: `eval_dir`, else the model's test split (relative to `base_dir`), else fallback."""
    if eval_dir is not None:
        folder = ImageFolder(eval_dir, info.preprocessing, info.labels, limit, seed)
        return EvalData([folder], _describe(folder, "user", "the user's --eval folder"))
    test = info.data.get("test")
    if test is not None and (base_dir / test).is_dir():
        folder = ImageFolder((base_dir / test).resolve(), info.preprocessing, info.labels, limit, seed)
        return EvalData([folder], _describe(folder, "model-test-split", "the model's held-out test split"))
    sources: list[Iterable[Sample]] = []
    desc: dict[str, Any] = {
        "kind": "fallback",
        "note": "no image of the user's was used: shipped digit images resized to the model's input, plus seeded "
        "random inputs; pass --eval DIR with your own images for a meaningful check",
    }
    shipped = shipped_images("test")
    if shipped is not None:
        folder = ImageFolder(shipped, info.preprocessing, None, FALLBACK_IMAGES, seed)
        sources.append(folder)
        desc.update(shipped_images=len(folder), shipped_root=str(shipped))
    else:
        desc["note"] += (
            "; the shipped digit images come with a checkout of the repository, not with the installed "
            "package, so only the seeded random inputs were used"
        )
    sources.append(RandomInputs(FALLBACK_RANDOM, (3, info.input_size, info.input_size), seed))
    desc["random_inputs"] = FALLBACK_RANDOM
    return EvalData(sources, desc)


def _describe(folder: ImageFolder, kind: str, what: str) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "kind": kind,
        "what": what,
        "root": str(folder.root),
        "images": len(folder),
        "list_sha256": folder.digest(),
        "labelled": folder.labelled,
    }
    if folder.unmatched_classes:  # without labels, no class folder can be matched: said so, for the advice
        key = "unmatched_class_folders" if folder.labels is not None else "class_folders_without_labels"
        desc[key] = folder.unmatched_classes[:20]
    return desc
