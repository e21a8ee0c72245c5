"""Folders of images (issue 22, item 9): walked without recursion and with a depth bound, by every reader;
names that are not UTF-8 are read, hashed and shown."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ghost_deploy.data.calibration import calibration_samples
from ghost_deploy.data.inputs import ImageFolder, check_data_paths
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.data.walk import MAX_DEPTH, image_files, shown_name
from ghost_deploy.errors import InputError
from tests.helpers import DIGITS

PRE = Preprocessing(resize=32, crop=32)
IMAGE = sorted((DIGITS / "test").rglob("*.png"))[0]


def _nested(root: Path, levels: int) -> Path:
    """`root` with `levels` folders one inside the other and an image at the bottom (made relative to open
    folders, so no path grows past the system's limit); returns root."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("a", dir_fd=fd)
            inner = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open("x.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, IMAGE.read_bytes())
        os.close(out)
    finally:
        os.close(fd)
    return root


def _remove_nested(root: Path, levels: int) -> None:
    """Remove what `_nested` made, from the bottom up (shutil.rmtree, and so pytest's clean-up, recurses)."""
    chain = [root / Path(*["a"] * n) for n in range(levels + 1)]
    (chain[-1] / "x.png").unlink()
    for folder in reversed(chain):
        folder.rmdir()


def test_a_folder_1100_levels_deep_is_bad_input_not_a_recursion_error(tmp_path: Path) -> None:
    deep = _nested(tmp_path / "deep", 1100)
    try:
        for read in (
            lambda: ImageFolder(deep, PRE),  # --eval, test splits
            lambda: check_data_paths(calib=deep),  # --calib, checked before the model loads
            lambda: check_data_paths(eval_dir=deep),
        ):
            with pytest.raises(InputError, match=f"nest more than {MAX_DEPTH} levels deep"):
                read()
    finally:
        _remove_nested(deep, 1100)


def test_images_at_the_depth_bound_are_found(tmp_path: Path) -> None:
    root = _nested(tmp_path / "ok", MAX_DEPTH)
    assert [p.name for p in image_files(root)] == ["x.png"]
    assert len(ImageFolder(root, PRE)) == 1


def test_the_walk_is_rglobs_walk(tmp_path: Path) -> None:
    # what Path.rglob found before: sub-folders in name order, linked images, no linked folders, no loops
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    for rel in ("b/c/2.png", "a/1.PNG", "0.jpg", "b/not-an-image.txt"):
        shutil.copy(IMAGE, tmp_path / rel)
    (tmp_path / "a" / "link.png").symlink_to(tmp_path / "0.jpg")
    (tmp_path / "b" / "loop").symlink_to(tmp_path)
    (tmp_path / "folder.png").mkdir()
    found = sorted(image_files(tmp_path))
    assert found == sorted(p for p in tmp_path.rglob("*") if p.suffix.lower() in (".png", ".jpg") and p.is_file())
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["0.jpg", "a/1.PNG", "a/link.png", "b/c/2.png"]


def test_names_that_are_not_utf8_are_read_hashed_and_shown(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"d\xff")))
    folder.mkdir()
    shutil.copy(IMAGE, Path(os.fsdecode(os.path.join(os.fsencode(folder), b"x\xfe.png"))))
    images = ImageFolder(tmp_path, PRE, labels=["0"])
    assert len(images.digest()) == 64  # before: UnicodeEncodeError (exit 1)
    (sample,) = list(images)
    assert sample.name == "d\udcff/x\udcfe.png"  # the bytes on disk, to open the file again (thumbnails)
    assert shown_name(sample.name) == "d\\xff/x\\xfe.png"  # what a page or a message shows
    _, desc = calibration_samples(tmp_path, type("Info", (), {"preprocessing": PRE, "input_size": 32})(), None)
    assert desc["used"] == 1 and len(desc["list_sha256"]) == 64


def test_shown_name_leaves_text_alone_and_escapes_lone_surrogates() -> None:
    assert shown_name("chat 猫/déjà.png") == "chat 猫/déjà.png"
    assert shown_name("\ud800x") == "\\ud800x"  # not an escaped byte (read from JSON): its code point
