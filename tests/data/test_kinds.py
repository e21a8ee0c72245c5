"""A file that is not what was expected is named for what it is (issue 21): an ONNX model given as a bundle, a
text file given as an image, a folder without images given to --calib or --eval."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghost_deploy.bundle.archive import not_a_bundle
from ghost_deploy.data.inputs import check_data_paths
from ghost_deploy.data.kinds import describe, describe_bytes
from ghost_deploy.data.preprocess import load_rgb
from ghost_deploy.errors import InputError
from tests.helpers import DIGITS, tiny_onnx


@pytest.mark.parametrize(
    ("head", "suffix", "what"),
    [
        (b"", "", "an empty file"),
        (b"\x89PNG\r\n\x1a\n....", ".png", "a PNG image"),
        (b"\x08\x08\x12\x07pytorch", ".onnx", "an ONNX model"),
        (b"PK\x03\x04rest", ".pt", "a zip archive (a PyTorch checkpoint or an .npz?)"),
        (b"\x1f\x8b\x08\x00", ".gz", "gzip-compressed data"),
        (b"cat,dog\n0,1\n", ".jpg", "a text file (it starts with 'cat,dog')"),
        ("naïve caf\u00e9".encode()[:11], ".txt", "a text file (it starts with 'naïve caf')"),  # a character cut
        (b"\x00\x01\x02\x03", ".bin", "binary data of an unknown kind (it starts with b'\\x00\\x01\\x02\\x03')"),
    ],
)
def test_the_first_bytes_say_what_a_file_is(head: bytes, suffix: str, what: str) -> None:
    assert describe_bytes(head, suffix) == what


def test_a_text_file_given_as_an_image_is_named_a_text_file(tmp_path: Path) -> None:
    text = tmp_path / "photo.jpg"
    text.write_text("not a picture\n")
    with pytest.raises(InputError) as err:
        load_rgb(text)
    message = str(err.value)
    assert "it is a text file (it starts with 'not a picture'), not an image; give a JPEG, PNG or BMP" in message
    assert "BufferedReader" not in message
    broken = tmp_path / "cut.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage!" * 4)  # a PNG signature, then no PNG
    with pytest.raises(InputError, match="starts like a PNG image, but cannot be decoded"):
        load_rgb(broken)


def test_an_onnx_model_given_as_a_bundle_says_how_to_pack_it(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "model.onnx")
    assert describe(model) == "an ONNX model"
    text = not_a_bundle(model)
    assert "is not a bundle: it is an ONNX model" in text and f"ghost-deploy pack {model} -o model.tar.gz" in text
    notes = tmp_path / "notes.tar.gz"
    notes.write_text("hello")
    assert "it is a text file" in not_a_bundle(notes) and "ghost-deploy pack`" in not_a_bundle(notes)
    assert describe(tmp_path) == "a directory"


def test_calibration_and_evaluation_paths_are_checked_for_what_they_hold(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"--eval .*empty: no image in it"):
        check_data_paths(eval_dir=empty)
    with pytest.raises(InputError, match=r"--calib .*empty: no image in it"):
        check_data_paths(calib=empty)
    with pytest.raises(InputError, match=r"--calib .*notes.txt is a text file .*; expected a folder of images or an "):
        check_data_paths(calib=empty / "cat" / "notes.txt")
    with pytest.raises(InputError, match=r"--eval .*notes.txt is a text file .*, not a folder"):
        check_data_paths(eval_dir=empty / "cat" / "notes.txt")
    with pytest.raises(InputError, match=r"--calib .*missing does not exist"):
        check_data_paths(calib=tmp_path / "missing")
    check_data_paths(DIGITS / "calibration", DIGITS / "test")  # real folders pass
