"""Preprocessing: image modes, resize and crop, normalisation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ghost_deploy.data.preprocess import Preprocessing, load_rgb, parse_triple, preprocess_file, preprocess_image
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


# --- reliability (issue 13): every hostile or careless image is an unreadable image, in bounded memory ---


def _png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (RGB, 8 bit), with one empty IDAT: nothing to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 10000)])
def test_decompression_bombs_are_unreadable_images_refused_on_the_header(
    tmp_path: Path, width: int, height: int
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(width, height))
    with pytest.raises(InputError, match=r"bomb\.png.*(decompression bomb|Mpx)"):
        load_rgb(path)


def test_a_bomb_in_a_calibration_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    from ghost_deploy.data.inputs import ImageFolder

    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bomb.png").write_bytes(_png(30000, 30000))
    folder = ImageFolder(tmp_path, Preprocessing(8, 8), skip_unreadable=True)
    assert [p.name for p in folder.paths] == ["good.png"] and "bomb.png" in folder.skipped[0]


def test_a_thin_strip_is_preprocessed_in_bounded_memory(tmp_path: Path) -> None:
    """1 x 1000000 pixels (a 2 KB PNG) resized to a shorter side of 256 would be 256 x 256 M pixels (>7 GB)."""
    from tests.helpers import run_limited

    Image.fromarray(np.full((1, 1_000_000), 200, np.uint8), "L").save(tmp_path / "strip.png")
    code = (
        "import sys; from pathlib import Path; "
        "from ghost_deploy.data.preprocess import Preprocessing, preprocess_file; "
        "x = preprocess_file(Path(sys.argv[1]), Preprocessing(256, 224)); print(x.shape, float(x.mean()))"
    )
    proc = run_limited(code, str(tmp_path / "strip.png"), memory=2 << 30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("(3, 224, 224)")


def test_a_fifo_given_as_an_image_is_refused_not_waited_on(tmp_path: Path) -> None:
    from tests.helpers import run_limited

    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    code = (
        "import sys; from pathlib import Path; from ghost_deploy.data.preprocess import load_rgb\n"
        "try:\n    load_rgb(Path(sys.argv[1]))\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"
    )
    proc = run_limited(code, str(fifo), timeout=60)  # today's code would block here forever
    assert proc.stdout.startswith("InputError") and "FIFO" in proc.stdout, proc.stdout + proc.stderr


def test_an_empty_image_is_an_input_error_not_a_division_by_zero() -> None:
    for img in (Image.new("RGB", (0, 0)), Image.new("RGB", (0, 7)), Image.new("RGB", (5, 0))):
        with pytest.raises(InputError, match="empty"):
            preprocess_image(img, Preprocessing(8, 8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": (float("nan"), 0.5, 0.5)}, "finite"),
        ({"std": (float("inf"), 1.0, 1.0)}, "finite"),
        ({"std": (0.0, 1.0, 1.0)}, "positive"),
        ({"resize": 16384, "crop": 16384}, "at most 4096"),
    ],
)
def test_non_finite_non_positive_and_huge_preprocessing_is_refused(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InputError, match=message):
        Preprocessing(**{"resize": 8, "crop": 8, **kwargs})
    for text in ("nan,0.5,0.5", "0.5,inf,0.5", "0.5,0.5,-inf"):
        with pytest.raises(InputError, match="finite"):
            parse_triple(text)


_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"]


@settings(max_examples=60, deadline=None)
@given(
    width=st.sampled_from([1, 2, 3, 7, 31, 64, 300, 5000]),
    height=st.sampled_from([1, 2, 5, 33, 64]),
    mode=st.sampled_from(_MODES),
    fmt=st.sampled_from(["PNG", "BMP", "JPEG"]),
    cut=st.none() | st.floats(0.0, 1.0),
    seed=st.integers(0, 3),
)
def test_fuzzed_images_give_a_finite_input_or_an_input_error(
    width: int, height: int, mode: str, fmt: str, cut: float | None, seed: int
) -> None:
    import io
    import tempfile

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")
    try:
        img = img.convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # a format that cannot hold this mode: nothing to test
    data = buf.getvalue()
    if cut is not None:
        data = data[: int(len(data) * cut)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x.{fmt.lower()}"
        path.write_bytes(data)
        try:
            out = preprocess_file(path, Preprocessing(resize=40, crop=32))
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and np.isfinite(out).all()


# --- reliability (issue 22): one conversion for files and PIL images; EXIF orientation; float images by range ---


def _wide_16_bit() -> Image.Image:
    """A 16-bit ramp (0..61380) whose 8-bit clip would be nearly all white."""
    return Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))


@pytest.mark.parametrize(
    "make",
    [
        _wide_16_bit,
        lambda: _wide_16_bit().convert("I"),
        lambda: Image.fromarray((np.arange(32 * 32).reshape(32, 32) / 1024).astype(np.float32), "F"),
    ],
    ids=["I;16", "I", "F"],
)
def test_a_pil_image_and_its_file_give_the_same_input(tmp_path: Path, make: object) -> None:
    """`Bundle.predict(Image.open(p))` once converted with PIL's clipping (up to 4.2 apart in normalised units)."""
    from ghost_deploy.data.preprocess import to_rgb

    img = make()  # type: ignore[operator]
    path = tmp_path / "x.tiff"
    img.save(path)
    pre = Preprocessing(32, 32)
    from_file = preprocess_file(path, pre)
    with Image.open(path) as opened:
        from_pil = preprocess_image(to_rgb(opened), pre)
    assert np.abs(from_file - from_pil).max() == 0.0
    assert 0.2 < float(np.asarray(load_rgb(path)).mean()) / 255 < 0.8  # a ramp, neither clipped white nor black


def test_the_exif_orientation_is_applied_to_files_and_pil_images(tmp_path: Path) -> None:
    """Orientation 6 (a portrait phone photo stored sideways): the left half white is, shown, the top half."""
    from ghost_deploy.data.preprocess import to_rgb

    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, :16] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "p.jpg", exif=exif.tobytes(), quality=95)
    for shown in (np.asarray(load_rgb(tmp_path / "p.jpg")), np.asarray(to_rgb(Image.open(tmp_path / "p.jpg")))):
        assert shown[:16].mean() > 200 and shown[16:].mean() < 50


def test_float_images_are_read_by_their_range_or_refused() -> None:
    from ghost_deploy.data.preprocess import to_rgb

    def grey(value: float) -> int:
        return int(np.asarray(to_rgb(Image.fromarray(np.full((4, 4), value, np.float32), "F")))[0, 0, 0])

    assert grey(0.8) == 204  # 0..1 (once clipped to black: 0)
    assert grey(100.0) == 100  # 0..255
    assert grey(32768.0) == 128  # 0..65535
    for bad in (-0.5, 1e6, float("nan")):
        with pytest.raises(InputError, match="convert it to 8 or 16 bits"):
            grey(bad)
