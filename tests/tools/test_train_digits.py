"""tools/train_digits.py: the digit image set, its split, and the shipped checkpoint it produces."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from tests.helpers import DIGITS, REPO, SHIPPED_MODEL

SCRIPT = REPO / "tools" / "train_digits.py"
SPLITS = ("train", "calibration", "test")
CLASSES = [str(d) for d in range(10)]


def _script() -> ModuleType:
    """The training script as a module, for its split helpers (main is run in a subprocess instead)."""
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _indices_by_split(root: Path) -> dict[str, list[int]]:
    """Sample indices (file stems) per split folder, checking each file sits in a class folder."""
    found: dict[str, list[int]] = {}
    for split in SPLITS:
        paths = sorted((root / split).glob("*/*.png"))
        assert all(p.parent.name in CLASSES for p in paths)
        found[split] = sorted(int(p.stem) for p in paths)
    return found


def _assert_disjoint_and_complete(found: dict[str, list[int]]) -> None:
    everything = [i for indices in found.values() for i in indices]
    assert len(everything) == len(set(everything)), "a sample is in two split folders"
    assert sorted(everything) == list(range(1797)), "the split folders do not hold each of the 1797 digits once"


@pytest.mark.slow
def test_smoke_training_writes_split_and_loadable_checkpoint(tmp_path: Path) -> None:
    import torch

    out, data = tmp_path / "m.pt", tmp_path / "digits"
    cmd = [sys.executable, str(SCRIPT), "--limit", "50", "--epochs", "1", "--output", str(out), "--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test top-1" in proc.stdout

    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    meta = ckpt["ghost_deploy"]
    assert meta["arch"] == "ghostnet_050" and meta["width"] == 0.5
    assert meta["num_classes"] == 10 and meta["input_size"] == 64
    assert meta["labels"] == CLASSES
    assert meta["preprocessing"]["resize"] == 64 and meta["preprocessing"]["crop"] == 64
    assert meta["training"]["train_images"] == 50 and meta["training"]["epochs"] == 1
    # data folders are relative to the checkpoint and point at the written split
    assert all((out.parent / meta["data"][split]).resolve() == (data / split).resolve() for split in SPLITS)
    assert ckpt["state_dict"]["classifier.weight"].shape == (10, 1280)

    found = _indices_by_split(data)
    _assert_disjoint_and_complete(found)
    assert all(len(list((data / split).iterdir())) == 10 for split in SPLITS)


def test_committed_split_has_no_overlap_and_ten_classes_per_part() -> None:
    for split in SPLITS:
        assert sorted(p.name for p in (DIGITS / split).iterdir() if p.is_dir()) == CLASSES
    files = {split: {p.relative_to(DIGITS / split) for p in (DIGITS / split).glob("*/*.png")} for split in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            assert not files[first] & files[second], f"{first} and {second} share files"
    _assert_disjoint_and_complete(_indices_by_split(DIGITS))


def test_committed_images_are_the_sklearn_digits_in_the_scripted_split() -> None:
    from sklearn.datasets import load_digits

    script = _script()
    digits = load_digits()
    pixels = script.digit_pixels(digits.images)
    expected = script.split_indices(np.asarray(digits.target))
    assert _indices_by_split(DIGITS) == expected
    for split, indices in expected.items():
        for i in indices:
            path = DIGITS / split / str(int(digits.target[i])) / f"{i:04d}.png"
            with Image.open(path) as img:
                assert img.mode == "L" and img.size == (8, 8)
                assert np.array_equal(np.asarray(img), pixels[i]), path
    counts = {split: len(indices) for split, indices in expected.items()}
    assert counts == {"train": 1259, "calibration": 179, "test": 359}


def test_pixel_scaling_is_rounded_and_invents_nothing() -> None:
    script = _script()
    values = np.arange(17, dtype=np.float64).reshape(1, 17)
    scaled = script.digit_pixels(values)[0].tolist()
    assert scaled[0] == 0 and scaled[16] == 255 and scaled[8] == 128  # 127.5 rounds half up
    assert scaled == [int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)]


@pytest.mark.slow
def test_shipped_model_reaches_its_recorded_accuracy() -> None:
    import torch

    from ghost_deploy.data.preprocess import preprocess_file
    from ghost_deploy.model.checkpoint import load_model

    loaded = load_model(SHIPPED_MODEL)
    info = loaded.info
    assert (info.arch, info.num_classes, info.input_size, info.source) == ("ghostnet_050", 10, 64, "metadata")
    test_dir = (SHIPPED_MODEL.parent / info.data["test"]).resolve()
    assert test_dir == DIGITS.resolve() / "test"
    paths = sorted(test_dir.glob("*/*.png"))
    x = torch.from_numpy(np.stack([preprocess_file(p, info.preprocessing) for p in paths]))
    labels = torch.tensor([int(p.parent.name) for p in paths])
    with torch.no_grad():
        top1 = float((loaded.module(x).argmax(1) == labels).float().mean())
    recorded = torch.load(SHIPPED_MODEL, map_location="cpu", weights_only=True)["ghost_deploy"]["training"]
    assert top1 >= 0.97
    assert top1 == pytest.approx(recorded["test_top1"], abs=1e-3)
