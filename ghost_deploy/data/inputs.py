"""Input sources: real images from a folder, arrays from .npy/.npz, or seeded random data.

Every source yields `Sample`s, one at a time (arrays stream too: `data.arrays`); `batches` groups them into
feeds `{input name: array}` for any runner.
Verification, profiling and calibration all read through here, with the model's own preprocessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ghost_deploy.data.kinds import describe
from ghost_deploy.data.preprocess import IMAGE_SUFFIXES, Preprocessing, load_rgb, preprocess_file
from ghost_deploy.data.walk import image_files
from ghost_deploy.errors import InputError


@dataclasses.dataclass(frozen=True)
class Sample:
    """One preprocessed CHW float32 input, its class index when known, and where it came from."""

    array: np.ndarray
    label: int | None
    name: str


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of feeds, padded to the runner's fixed batch size; `count` rows are real, named by `names`."""

    feeds: dict[str, np.ndarray]
    labels: list[int | None]
    count: int
    names: tuple[str, ...] = ()  # each real row's Sample.name (a report can point at the images it got wrong)


@dataclasses.dataclass
class ImageFolder:
    """Images under a folder (recursive); class sub-folders give labels when they match `labels`."""

    root: Path
    preprocessing: Preprocessing
    labels: Sequence[str] | None = None
    limit: int | None = None
    seed: int = 0
    skip_unreadable: bool = False  # decode every image up front, drop the unreadable ones and count them
    paths: list[Path] = dataclasses.field(init=False)
    skipped: list[str] = dataclasses.field(init=False, default_factory=list)
    unmatched_classes: list[str] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if not self.root.is_dir():
            raise InputError(f"image folder {self.root} does not exist or is not a directory")
        paths = sorted(image_files(self.root))
        if not paths:
            raise InputError(
                f"no image in {self.root} (searched recursively for {', '.join(IMAGE_SUFFIXES)}); "
                "give a folder of images, optionally in one sub-folder per class"
            )
        if self.skip_unreadable:
            paths = self._readable(paths)
        if self.limit is not None and len(paths) > self.limit:
            paths = sorted(random.Random(self.seed).sample(paths, self.limit))
        self.paths = paths
        classes = sorted({c for p in paths if (c := self._class_name(p)) is not None})
        known = set(self.labels or ())
        self.unmatched_classes = [c for c in classes if c not in known]

    def _readable(self, paths: list[Path]) -> list[Path]:
        good = []
        for path in paths:
            try:
                load_rgb(path)
                good.append(path)
            except InputError as exc:
                self.skipped.append(str(exc))
        if not good:
            raise InputError(
                f"no readable image in {self.root}: all {len(paths)} files were skipped; first: {self.skipped[0]}"
            )
        return good

    def _class_name(self, path: Path) -> str | None:
        rel = path.relative_to(self.root)
        return rel.parts[0] if len(rel.parts) > 1 else None

    @property
    def labelled(self) -> bool:
        """True when every image sits in a class folder whose name is one of the labels."""
        return self.labels is not None and all(
            (c := self._class_name(p)) is not None and c in self.labels for p in self.paths
        )

    def digest(self) -> str:
        """sha256 of the sorted relative file list: records which images were used."""
        text = "\n".join(str(p.relative_to(self.root)) for p in self.paths)
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()  # a name that is not UTF-8 too

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Sample]:
        index = {name: i for i, name in enumerate(self.labels or ())}
        for path in self.paths:
            cls = self._class_name(path)
            label = index.get(cls) if cls is not None else None
            yield Sample(preprocess_file(path, self.preprocessing), label, str(path.relative_to(self.root)))


def check_data_paths(calib: Path | None = None, eval_dir: Path | None = None) -> None:
    """What --calib and --eval name, checked before any slow step (a checkpoint's load included): --calib a
    folder holding at least one image or an .npy/.npz file, --eval a folder holding at least one image."""
    if calib is not None:
        if not calib.exists():
            raise InputError(f"--calib {calib} does not exist; check the path")
        if calib.is_dir():
            _check_has_images(calib, "--calib")
        elif calib.suffix.lower() not in (".npy", ".npz"):
            raise InputError(
                f"--calib {calib} is {describe(calib)}; expected a folder of images or an .npy/.npz file of "
                "preprocessed batches"
            )
    if eval_dir is not None:
        if not eval_dir.exists():
            raise InputError(f"--eval {eval_dir} does not exist; check the path")
        if not eval_dir.is_dir():
            raise InputError(f"--eval {eval_dir} is {describe(eval_dir)}, not a folder; give a folder of images")
        _check_has_images(eval_dir, "--eval")


def _check_has_images(folder: Path, flag: str) -> None:
    """InputError unless `folder` holds an image file somewhere below it (stops at the first one)."""
    found = next(iter(image_files(folder, flag)), None) is not None
    if not found:
        raise InputError(
            f"{flag} {folder}: no image in it (searched recursively for {', '.join(IMAGE_SUFFIXES)}); give a "
            "folder of images, optionally in one sub-folder per class"
        )


@dataclasses.dataclass
class RandomInputs:
    """Seeded standard-normal inputs of one shape: for when no image fits, and for profiling."""

    count: int
    shape: tuple[int, int, int]
    seed: int = 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Sample]:
        rng = np.random.default_rng(self.seed)
        for i in range(self.count):
            yield Sample(rng.standard_normal(self.shape, dtype=np.float32), None, f"random-{self.seed}-{i}")


def batches(samples: Iterable[Sample], input_name: str, batch_size: int, pad: bool = True) -> Iterator[Batch]:
    """Group samples into batches; with `pad`, the last one is filled up with copies of its last row."""
    buf: list[Sample] = []
    for sample in samples:
        buf.append(sample)
        if len(buf) == batch_size:
            yield _stack(buf, input_name, batch_size)
            buf = []
    if buf:
        yield _stack(buf, input_name, batch_size if pad else len(buf))


def _stack(buf: list[Sample], input_name: str, size: int) -> Batch:
    arrays = [s.array for s in buf] + [buf[-1].array] * (size - len(buf))
    stacked = np.stack(arrays).astype(np.float32, copy=False)
    return Batch({input_name: stacked}, [s.label for s in buf], len(buf), tuple(s.name for s in buf))
