"""Per-class accuracy of FP32 and each target, and small inline images of what each got wrong, read safely."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ghost_deploy.view import thumbs
from ghost_deploy.view.collect import Collector
from ghost_deploy.view.html import render_page
from tests.view.parsed import ParsedPage, parse_page
from tests.view.samples import artifact_report, check, write

LABELS = [str(i) for i in range(10)]


def _labelled(
    root: Path, digest: str, cand: list[int], misses: list[dict[str, Any]], ref: list[int] | None = None
) -> dict[str, Any]:
    """A verification record on the labelled folder `root`: 36 images per class, `cand` right per class."""
    record = check()
    record["data"] = {"kind": "user", "what": "the user's --eval folder", "root": str(root), "images": 360,
                      "list_sha256": digest, "labelled": True}  # fmt: skip
    per_class = {"samples": [36] * 10, "reference_correct": ref or [36] * 10, "candidate_correct": cand}
    record["metrics"] |= {"per_class": per_class, "misclassified": misses}
    return record


def _image(path: Path, size: tuple[int, int], seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.name


def _page(tmp_path: Path, fp32: dict[str, Any], int8: dict[str, Any]) -> ParsedPage:
    collector = Collector()
    collector.add_path(write(tmp_path, "m.onnx.json", artifact_report("m.onnx", verification=fp32)))
    report = artifact_report("m.onnx-int8.onnx", "onnx-int8", "2" * 64, precision_verification=int8)
    collector.add_path(write(tmp_path, "m.onnx-int8.onnx.json", report))
    return parse_page(render_page(collector.page()))


def _decoded(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_per_class_accuracy_of_fp32_and_each_target_and_the_images_they_got_wrong(tmp_path: Path) -> None:
    root = tmp_path / "eval"
    _image(root / "3" / "tiny.png", (8, 8))
    _image(root / "5" / "big.jpg", (640, 480), seed=1)
    fp32_misses = [{"name": "3/tiny.png", "label": 3, "candidate": 8, "reference": 3}]
    int8_misses = [{"name": "5/big.jpg", "label": 5, "candidate": 6, "reference": 5}, *fp32_misses]
    fp32 = _labelled(root, "s1", [36, 36, 36, 35, 36, 36, 36, 36, 36, 36], fp32_misses)
    int8 = _labelled(root, "s1", [36, 36, 36, 35, 36, 0, 36, 36, 36, 36], int8_misses)
    seen = _page(tmp_path, fp32, int8)
    rows = {r.attrs["data-class"]: r for r in seen.rows_in("classes") if "data-class" in r.attrs}
    assert list(rows) == LABELS
    assert rows["5"].cells == ["5", "36", "100.00% (36/36)", "0.00% (0/36)"]
    assert "worse" in rows["5"].classes[3] and "worse" not in rows["3"].classes[3]  # 35/36 both: not worse
    header = next(r for r in seen.rows_in("classes") if r.cells and r.cells[0] == "class")
    assert header.cells == ["class", "images", "FP32 (m.onnx)", "m.onnx-int8.onnx"]
    assert len(seen.images) == 3  # FP32's one, the INT8's two
    tiny, big = _decoded(seen.images[0]), _decoded(seen.images[1])
    assert tiny.size == (64, 64)  # 8 x 8 enlarged pixel for pixel
    assert big.size == (64, 48)  # shrunk, aspect kept
    assert "is 5; said 6, FP32: 5" in seen.sections["classes"]


def test_a_target_that_only_repeats_fp32_mistakes_gets_one_line(tmp_path: Path) -> None:
    root = tmp_path / "eval"
    _image(root / "3" / "a.png", (8, 8))
    misses = [{"name": "3/a.png", "label": 3, "candidate": 8, "reference": 8}]
    seen = _page(tmp_path, _labelled(root, "s1", [36] * 10, misses), _labelled(root, "s1", [36] * 10, misses))
    assert (
        len(seen.images) == 1
        and "Images m.onnx-int8.onnx got wrong: only images FP32 got wrong too" in (seen.sections["classes"])
    )


def test_numbers_of_two_image_sets_are_never_in_one_table(tmp_path: Path) -> None:
    seen = _page(tmp_path, _labelled(tmp_path, "s1", [36] * 10, []), _labelled(tmp_path, "s2", [30] * 10, []))
    headers = [r.cells for r in seen.rows_in("classes") if r.cells and r.cells[0] == "class"]
    assert headers == [["class", "images", "FP32 (m.onnx)"], ["class", "images", "FP32 ONNX", "m.onnx-int8.onnx"]]


def _bomb(path: Path) -> None:
    """A PNG whose header declares 100000 x 100000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_hostile_names_and_files_are_never_shown_nor_hang(tmp_path: Path) -> None:
    root = tmp_path / "eval"
    (root / "1").mkdir(parents=True)
    _image(tmp_path / "outside.png", (8, 8))
    (root / "1" / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "1" / "text.png").write_text("not an image")
    _bomb(root / "1" / "bomb.png")
    os.mkfifo(root / "1" / "fifo.png")
    (root / "1" / "notes.txt").write_text("x")
    names = ["../outside.png", str(tmp_path / "outside.png"), "1/link.png", "1/text.png", "1/bomb.png",
             "1/fifo.png", "1/notes.txt", "1/missing.png", "1/\x00.png"]  # fmt: skip
    misses = [{"name": n, "label": 1, "candidate": 2, "reference": 1} for n in names]
    seen = _page(tmp_path, _labelled(root, "s1", [36] * 10, []), _labelled(root, "s1", [36] * 10, misses))
    assert seen.images == []
    assert seen.sections["classes"].count("image not shown") == min(len(names), 8)


@pytest.mark.parametrize(("side", "bound"), [(8, "count"), (200, "bytes")])
def test_the_page_holds_a_bounded_number_of_small_images(tmp_path: Path, side: int, bound: str) -> None:
    root = tmp_path / "eval"
    collector = Collector()
    for k in range(12):  # 12 targets x 8 images of their own: more than the page may carry
        names = [_image(root / "1" / f"{k}-{i}.png", (side, side), seed=8 * k + i) for i in range(8)]
        misses = [{"name": f"1/{n}", "label": 1, "candidate": 2, "reference": 1} for n in names]
        report = artifact_report(f"t{k}.onnx", "onnx-int8", f"{k:064d}")
        report["precision_verification"] = _labelled(root, "s1", [36] * 10, misses)
        collector.add_path(write(tmp_path, f"t{k}.onnx.json", report))
    seen = parse_page(render_page(collector.page()))
    sizes = [len(base64.b64decode(src.split(",", 1)[1])) for src in seen.images]
    assert len(seen.images) <= thumbs.MAX_IMAGES and sum(sizes) <= thumbs.MAX_TOTAL_BYTES
    assert max(sizes) <= thumbs.MAX_THUMB_BYTES and all(max(_decoded(s).size) <= thumbs.THUMB for s in seen.images)
    if bound == "count":
        assert len(seen.images) == thumbs.MAX_IMAGES
    else:  # noise compresses badly: the byte budget stops it first, one thumbnail short of it at most
        assert len(seen.images) < thumbs.MAX_IMAGES and sum(sizes) > thumbs.MAX_TOTAL_BYTES - max(sizes)
    assert seen.sections["classes"].count("image not shown") == 96 - len(seen.images)
