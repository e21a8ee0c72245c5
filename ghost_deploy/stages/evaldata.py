"""Which images verification runs on: the user's folder, the model's own test split, or shipped images.

The report always says which (`images_source`), and says so plainly when none of the user's images was used.
The model's test split is read only inside the model file's folder (`model.datapaths`): its metadata is input.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from ghost_deploy.data.inputs import ImageFolder, RandomInputs, Sample
from ghost_deploy.data.shipped import shipped_images
from ghost_deploy.model.datapaths import metadata_folder
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
    """Choose verification inputs: `eval_dir`, else the model's test split (relative to `base_dir`, and only
    inside it: `model.datapaths`), else fallback. `images_source` in the description says which, in words."""
    if eval_dir is not None:
        folder = ImageFolder(eval_dir, info.preprocessing, info.labels, limit, seed)
        user = _describe(folder, "user", "the user's --eval folder")
        return EvalData([folder], {**user, "images_source": f"--eval DIR ({folder.root})"})
    test = metadata_folder(info, "test", base_dir)
    if test.path is not None and test.path.is_dir():
        folder = ImageFolder(test.path, info.preprocessing, info.labels, limit, seed)
        split = _describe(folder, "model-test-split", "the model's held-out test split")
        return EvalData([folder], {**split, "images_source": test.source})
    sources: list[Iterable[Sample]] = []
    desc: dict[str, Any] = {
        "kind": "fallback",
        "note": "no image of the user's was used: shipped digit images resized to the model's input, plus seeded "
        "random inputs; pass --eval DIR with your own images for a meaningful check",
    }
    if test.refused is not None:  # the metadata named a folder outside the model's own: never read
        desc["refused_metadata_folder"] = test.refused
        desc["note"] = f"{test.brief}; {desc['note']}"
    shipped = shipped_images("test")
    if shipped is not None:
        folder = ImageFolder(shipped, info.preprocessing, None, FALLBACK_IMAGES, seed)
        sources.append(folder)
        desc.update(shipped_images=len(folder), shipped_root=str(shipped))
        desc["images_source"] = "shipped digits + seeded random"
    else:
        desc["note"] += (
            "; the shipped digit images come with a checkout of the repository, not with the installed "
            "package, so only the seeded random inputs were used"
        )
        desc["images_source"] = "seeded random"
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
