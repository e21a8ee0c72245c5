"""Preprocessing: image modes, resize and crop, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghost_deploy.data.preprocess import Preprocessing, load_rgb, parse_triple, preprocess_file
from ghost_deploy.errors import InputError


def test_grayscale_rgba_and_16_bit_become_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((10, 10), 128, np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(np.full((10, 10, 4), 200, np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((10, 10), 65535, np.uint16)).save(tmp_path / "w.png")
    assert np.asarray(load_rgb(tmp_path / "g.png"))[0, 0].tolist() == [128, 128, 128]
    assert np.asarray(load_rgb(tmp_path / "a.png"))[0, 0].tolist() == [200, 200, 200]
    assert np.asarray(load_rgb(tmp_path / "w.png"))[0, 0].tolist() == [255, 255, 255]


def test_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 30:50] = 255  # a white band in the middle survives the centre crop
    Image.fromarray(arr).save(tmp_path / "wide.png")
    pre = Preprocessing(resize=20, crop=16, mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess_file(tmp_path / "wide.png", pre)
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    assert out[:, :, 8].min() > 0.9 and out[:, :, 0].max() < 0.1


def test_normalisation_uses_mean_and_std(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(tmp_path / "w.png")
    out = preprocess_file(tmp_path / "w.png", Preprocessing(8, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)))
    assert out[:, 0, 0].tolist() == pytest.approx([2.0, 1.0, 0.5])


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="resize"):
        Preprocessing(resize=10, crop=20)
    with pytest.raises(InputError, match="interpolation"):
        Preprocessing(32, 32, interpolation="nearest")
    with pytest.raises(InputError, match="three"):
        parse_triple("1,2")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_rgb(tmp_path / "bad.png")
