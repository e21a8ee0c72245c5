"""Calibration inputs: a folder of images or an .npy/.npz array file, chosen by the path, and their description
for the report (how many were used, of how many, which were skipped)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ghost_deploy.data.arrays import ArrayFile
from ghost_deploy.data.inputs import ImageFolder, Sample
from ghost_deploy.data.walk import image_files
from ghost_deploy.errors import InputError
from ghost_deploy.report import print_line


def calibration_samples(
    path: Path, info: Any, size: int | None, seed: int = 0
) -> tuple[Iterable[Sample], dict[str, Any]]:
    """Calibration inputs from a folder of images or an .npy/.npz, and their description for the report."""
    if not path.exists():
        raise InputError(f"calibration data {path} does not exist; pass --calib DIR or an .npy/.npz file")
    source: ImageFolder | ArrayFile
    if path.is_dir():
        source = ImageFolder(path, info.preprocessing, None, size, seed, skip_unreadable=True)
        total = sum(1 for _ in image_files(path, "--calib"))
    elif path.suffix.lower() in (".npy", ".npz"):
        source = ArrayFile(path, (3, info.input_size, info.input_size), size, seed)
        total = len(source)
    else:
        raise InputError(f"--calib {path}: expected a folder of images or an .npy/.npz file")
    desc: dict[str, Any] = {"path": str(path), "used": len(source), "list_sha256": source.digest()}
    if isinstance(source, ImageFolder) and source.skipped:
        desc["skipped"] = {"count": len(source.skipped), "why": source.skipped[:10]}
        print_line(
            f"warning: skipped {len(source.skipped)} unreadable calibration files, e.g. {source.skipped[0]}",
            sys.stderr,
        )
    if size is not None and size > len(source):
        desc["warning"] = f"--calib-size {size} is larger than the {len(source)} inputs available: all are used"
        print_line(f"warning: {desc['warning']}", sys.stderr)
    elif size is not None:
        desc["available"] = total
    return source, desc
