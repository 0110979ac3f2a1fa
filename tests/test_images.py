"""core.images: every Pillow mode becomes the RGB picture a viewer shows, or a clear refusal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igpt_codec.core.errors import InputImageError
from igpt_codec.core.images import MAX_DIMENSION, LoadedImage, load_image
from igpt_codec.format.errors import CodecError


def _png(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def _pixels(loaded: LoadedImage) -> np.ndarray:
    assert loaded.rgb.mode == "RGB"
    return np.asarray(loaded.rgb)


def test_rgb_is_kept_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    loaded = load_image(_png(Image.fromarray(array), tmp_path / "a.png"))
    assert (loaded.width, loaded.height, loaded.mode) == (5, 7, "RGB")
    assert np.array_equal(_pixels(loaded), array)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"])
def test_plain_modes_follow_pillow_convert(mode: str) -> None:
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, size=(6, 4, 3), dtype=np.uint8)).convert(mode)
    loaded = load_image(source)
    assert loaded.mode == mode
    assert np.array_equal(_pixels(loaded), np.asarray(source.convert("RGB")))


def test_palette_png_round_trip(tmp_path: Path) -> None:
    rgb = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    path = _png(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), tmp_path / "p.png")
    loaded = load_image(path)
    assert loaded.mode == "P"
    with Image.open(path) as original:
        assert np.array_equal(_pixels(loaded), np.asarray(original.convert("RGB")))


def test_greyscale_is_grey() -> None:
    loaded = load_image(Image.new("L", (3, 2), 77))
    assert np.all(_pixels(loaded) == 77)


def test_one_bit_is_black_and_white() -> None:
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    assert _pixels(load_image(image)).tolist() == [[[0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa", "La"])
def test_transparency_is_composited_on_white(mode: str) -> None:
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 255))  # opaque black
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    if mode in ("PA", "La"):  # Pillow cannot convert RGBA to these; build them by hand
        alphas = bytes(rgba.getpixel((x, 0))[3] for x in range(4))
        image = Image.frombytes(mode, (4, 1), b"".join(bytes([0, a]) for a in alphas))
        if mode == "PA":
            image.putpalette([0, 0, 0] * 256)
    else:
        image = rgba.convert(mode)
    pixels = _pixels(load_image(image))[0]
    assert pixels[0].tolist() == [255, 255, 255]
    assert pixels[1].tolist() == [0, 0, 0]
    assert 120 <= pixels[2][0] <= 135 and len(set(pixels[2].tolist())) == 1
    assert load_image(image).mode == mode


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    path = _png(image, tmp_path / "t.png", transparency=0)
    assert _pixels(load_image(path))[0].tolist() == [[255, 255, 255], [0, 0, 255]]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_scales_instead_of_clipping(mode: str, tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    elif mode == "I;16B":  # convert() would clip to 255 on the way
        image = Image.frombytes(mode, (4, 1), values.astype(">u2").tobytes())
    else:
        image = Image.fromarray(values)
    assert image.mode == mode
    grey = _pixels(load_image(image))[0, :, 0]
    assert grey.tolist() == [0, 1, 128, 255]
    if mode == "I;16":
        reloaded = load_image(_png(image, tmp_path / "16.png"))
        assert reloaded.mode == "I;16" and _pixels(reloaded)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_mode_i_outside_16_bits_is_clipped() -> None:
    image = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32))
    assert _pixels(load_image(image))[0, :, 0].tolist() == [0, 255]


def test_float_follows_pillow_scale() -> None:
    image = Image.fromarray(np.array([[-3.0, 0.4, 127.6, 300.0]], dtype=np.float32))
    assert image.mode == "F"
    assert _pixels(load_image(image))[0, :, 0].tolist() == [0, 0, 128, 255]


def test_float_nan_is_refused() -> None:
    image = Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(InputImageError, match="NaN"):
        load_image(image)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((2, 3, 3), dtype=np.uint8)  # 3 wide, 2 high; top-left red
    array[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=100, subsampling=0)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (2, 3)
    pixels = _pixels(loaded)
    assert pixels[0, 1, 0] > 200 and pixels[0, 1, 1] < 60  # red went to the top-right


def test_first_frame_of_animation(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert _pixels(load_image(path))[0, 0].tolist() == [255, 0, 0]


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    path = _png(Image.new("RGB", (3, 3), (1, 2, 3)), tmp_path / "x.png")
    data = path.read_bytes()
    for source in (data, io.BytesIO(data), str(path), path):
        assert _pixels(load_image(source))[0, 0].tolist() == [1, 2, 3]


def test_caller_image_is_not_modified() -> None:
    image = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    load_image(image)
    assert image.mode == "RGBA" and image.getpixel((0, 0)) == (0, 0, 0, 0)


# --- refusals -------------------------------------------------------------------------------


def _refused(source, match: str, name: str | None = None) -> str:
    with pytest.raises(InputImageError, match=match) as info:
        load_image(source, name=name)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, CodecError)
    return message


def test_missing_file(tmp_path: Path) -> None:
    message = _refused(tmp_path / "nope.png", "no such file")
    assert "nope.png" in message


def test_directory(tmp_path: Path) -> None:
    _refused(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty.png" in _refused(path, "empty file")
    _refused(b"", "empty input")


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a picture\n")
    assert "notes.txt" in _refused(path, "not an image")


def test_truncated_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:2000])
    assert "cut.png" in _refused(cut, "cannot decode")


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _png(Image.new("L", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _refused(path, "too large")


def test_side_too_long_for_the_container(tmp_path: Path) -> None:
    path = _png(Image.new("1", (MAX_DIMENSION + 1, 1)), tmp_path / "wide.png")
    _refused(path, "outside the supported")


def test_name_labels_messages() -> None:
    assert _refused(b"junk", "not an image", name="<stdin>").startswith("<stdin>:")
