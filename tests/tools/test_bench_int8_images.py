"""tools/bench_int8_images.py: the images tools/bench_export.py's ort-int8 part judges INT8 on."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import numpy as np
import pytest

from tests.helpers import DIGITS, REPO

SCRIPT = REPO / "tools" / "bench_int8_images.py"
SIZE = 32


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_int8_images", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _pixels(images: np.ndarray) -> np.ndarray:
    """The images with the ImageNet normalisation undone (RGB in 0..1)."""
    std, mean = np.array([0.229, 0.224, 0.225]), np.array([0.485, 0.456, 0.406])
    return np.asarray(images * std[:, None, None] + mean[:, None, None])


@pytest.mark.slow
def test_photo_crops_are_the_same_every_run_and_held_out_ones_are_new() -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    tool = _module()
    first = tool.int8_images("photos", SIZE, 12, 6, str(DIGITS))
    again = tool.int8_images("photos", SIZE, 12, 6, str(DIGITS))
    calibration = np.stack([s.array for s in first.calibration])
    assert first.statistics.shape == (tool.STATISTICS, 3, SIZE, SIZE)
    assert calibration.shape == (12, 3, SIZE, SIZE) and first.held_out.shape == (6, 3, SIZE, SIZE)
    np.testing.assert_array_equal(first.held_out, again.held_out)
    np.testing.assert_array_equal(calibration, np.stack([s.array for s in again.calibration]))
    # real photos: colour (the digits are gray), none of the held-out crops among the calibration ones
    rgb = _pixels(first.held_out)
    assert np.abs(rgb[:, 0] - rgb[:, 1]).mean() > 0.02
    assert not any(np.allclose(row, cal) for row in first.held_out for cal in calibration)
    assert "grace_hopper.jpg" in first.what


def test_digits_are_the_shipped_splits() -> None:
    tool = _module()
    found = tool.int8_images("digits", SIZE, 10, 5, str(DIGITS))
    assert len(found.calibration) == 10 and found.held_out.shape == (5, 3, SIZE, SIZE)
    assert found.statistics.shape == (tool.STATISTICS, 3, SIZE, SIZE)
    rgb = _pixels(found.held_out)
    np.testing.assert_allclose(rgb[:, 0], rgb[:, 1], atol=1e-5)  # gray digits


def test_photos_without_their_packages_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _module()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # an import of it now raises ImportError
    with pytest.raises(SystemExit) as exc:
        tool.int8_images("photos", SIZE, 4, 2, str(DIGITS))
    assert exc.value.code == 3


def test_noise_is_a_third_of_a_gray_level_and_repeatable() -> None:
    tool = _module()
    images = np.zeros((4, 3, SIZE, SIZE), np.float32)
    noisy = tool.with_noise(images)
    assert noisy.dtype == np.float32
    assert abs(float(noisy.std()) - 0.005) < 0.0005 and 3 * float(noisy.std()) < 1 / 255 / 0.226
    np.testing.assert_array_equal(noisy, tool.with_noise(images))
