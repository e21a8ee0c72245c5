"""Small inline thumbnails of the evaluation images a target got wrong, read as the hostile files they may be.

A report names each image by its path under the evaluation folder it records. Only a relative name with an
image suffix that resolves (symbolic links followed) inside that folder is opened, through the project's
bounded image reading (`data.preprocess.load_rgb`: regular files only, the pixel count checked on the header
before anything is decoded). The page receives a PNG re-encoded here from the decoded pixels, never the file's
own bytes, at most THUMB pixels a side, and the page as a whole at most MAX_IMAGES of them and MAX_TOTAL_BYTES.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path, PurePosixPath

from PIL import Image

from ghost_deploy.data.preprocess import IMAGE_SUFFIXES, load_rgb
from ghost_deploy.errors import InputError

THUMB = 64  # pixels on the longer side
MAX_THUMB_BYTES = 16 * 1024
MAX_IMAGES = 48
MAX_TOTAL_BYTES = 384 * 1024


def image_path(root: str, name: str) -> Path | None:
    """The file `name` names under `root`, or None when it is not a relative image path that stays inside it."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or rel.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    try:
        base = Path(root).resolve(strict=True)
        path = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL in the name
        return None
    return path if path.is_relative_to(base) and path != base else None


def thumbnail_png(path: Path) -> bytes | None:
    """A PNG of the image at most THUMB pixels a side (a smaller one enlarged by whole pixels), or None when
    the file is unreadable or the PNG would exceed MAX_THUMB_BYTES."""
    try:
        img = load_rgb(path)
    except InputError:
        return None
    side = max(img.size)
    if side < THUMB:  # tiny images (8 x 8 digits) enlarged pixel for pixel, not blurred
        factor = THUMB // side
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.Resampling.NEAREST)
    else:
        img.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    data = out.getvalue()
    return data if len(data) <= MAX_THUMB_BYTES else None


class Thumbnails:
    """The thumbnails of one page: each image read once, and no more than the page's bounds in all."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str | None] = {}
        self.count = 0
        self.total = 0

    def uri(self, root: str | None, name: str) -> str | None:
        """A `data:image/png;base64,...` URI of the image, or None (unreadable, outside its folder, over bounds)."""
        if root is None:
            return None
        key = (root, name)
        if key not in self._seen:
            self._seen[key] = self._make(root, name)
        return self._seen[key]

    def _make(self, root: str, name: str) -> str | None:
        if self.count >= MAX_IMAGES:
            return None
        path = image_path(root, name)
        png = thumbnail_png(path) if path is not None else None
        if png is None or self.total + len(png) > MAX_TOTAL_BYTES:
            return None
        self.count += 1
        self.total += len(png)
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
