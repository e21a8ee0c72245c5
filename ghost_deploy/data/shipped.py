"""The shipped default: the trained digits GhostNet and its image set, which live in a checkout of the repository.

An installed wheel carries the code only; these helpers find the checkout the package runs from (a folder
above it holding ghost-deploy's `pyproject.toml`) and return None elsewhere, so callers can say plainly that
the shipped images need a checkout.
"""

from __future__ import annotations

from pathlib import Path

MODEL = Path("models") / "ghostnet_digits.pt"
IMAGES = Path("calibration") / "digits"


def checkout_root() -> Path | None:
    """The repository checkout this package was imported from, or None when it runs from an installed wheel."""
    for folder in Path(__file__).resolve().parents:
        project = folder / "pyproject.toml"
        if project.is_file() and 'name = "ghost-deploy"' in project.read_text(errors="replace"):
            return folder
    return None


def shipped_images(split: str) -> Path | None:
    """The shipped digit images of one split ('train', 'calibration', 'test'), or None without a checkout."""
    root = checkout_root()
    folder = root / IMAGES / split if root is not None else None
    return folder if folder is not None and folder.is_dir() else None
