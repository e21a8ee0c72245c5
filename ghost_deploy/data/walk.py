"""Folders of images, walked the one way every reader walks them (calibration, `--eval`, test splits), and the
names found there shown safely.

`Path.rglob` recurses once per folder level: a calibration folder 1,100 levels deep was a RecursionError (exit 1).
This walk keeps its own stack and refuses a tree deeper than MAX_DEPTH levels with one line (exit 2), naming the
folder. As `rglob` does, it does not descend into symbolic links to folders (a link to `..` would never end) and
passes over sub-folders it may not read; a linked image file counts.

A file name need not be UTF-8 (`d\\xff`): Python carries its bytes as surrogate escapes, which no UTF-8 file can
hold. `shown_name` writes them as `\\xff`, for pages and messages; paths used to open files keep the real bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ghost_deploy.data.preprocess import IMAGE_SUFFIXES
from ghost_deploy.errors import InputError

# Image datasets nest a few levels (split / class / images, at most a handful more); 32 is far beyond any of them
# and far below Python's recursion limit.
MAX_DEPTH = 32


def image_files(root: Path, what: str = "image folder") -> Iterator[Path]:
    """The image files (by suffix: IMAGE_SUFFIXES) at most MAX_DEPTH folder levels below `root`, each folder's
    entries in name order; InputError when a folder lies deeper, or `root` itself cannot be read."""
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if folder == root:
                raise InputError(f"{what} {root} cannot be read: {exc.strerror or exc}; check the path") from None
            continue  # an unreadable sub-folder is passed over, as rglob does
        folders = []
        for entry in entries:
            if _is_folder(entry):
                folders.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and _is_file(entry):
                yield Path(entry.path)
        if folders and depth >= MAX_DEPTH:
            raise InputError(
                f"{what} {root}: its folders nest more than {MAX_DEPTH} levels deep (e.g. "
                f"{shown_name(str(folders[0]))[:200]}); give a folder with the images at most {MAX_DEPTH} levels down"
            )
        stack.extend((sub, depth + 1) for sub in reversed(folders))


def shown_name(text: str) -> str:
    """`text` (a path or a message holding one) with the bytes of a name that is not UTF-8 written as `\\xNN`:
    text every UTF-8 file and terminal takes. Other text is returned unchanged."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (read from JSON): its code, escaped
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
