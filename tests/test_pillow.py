"""The Pillow plugin, through Pillow's own API: Image.open, seek, save, save_all."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import zero_image_stream
from PIL import Image, ImageSequence

import igpt_codec
import igpt_codec.pillow
from igpt_codec import api
from igpt_codec.core.palette import tokens_to_image
from igpt_codec.runtime.bundle import load_bundle

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "bsds500_val_101085.jpg"
BLOCKED = ("torch", "transformers", "optimum", "torchvision")


def expected_thumbnail(source, size: int) -> np.ndarray:
    bundle = load_bundle(None)
    tokens = api.tokenize([source], bundle, size)[0].tokens
    return np.asarray(tokens_to_image(tokens, bundle.palette, size))


def test_registered() -> None:
    assert Image.registered_extensions()[".igpt"] == "IGPT"
    assert "IGPT" in Image.OPEN and "IGPT" in Image.SAVE and "IGPT" in Image.SAVE_ALL
    assert Image.MIME["IGPT"] == "image/x-igpt"


def test_round_trip_by_file_name(tmp_path: Path) -> None:
    target = tmp_path / "photo.igpt"
    with Image.open(SAMPLE) as photo:
        photo.save(target, size=8)  # the format comes from the extension
    with Image.open(target) as image:
        assert image.format == "IGPT" and image.mode == "RGB" and image.size == (8, 8)
        assert image.info["original_size"] == (321, 481)
        assert image.info["original_mode"] == "RGB"
        assert image.n_frames == 1 and not image.is_animated
        pixels = np.asarray(image)
    assert np.array_equal(pixels, expected_thumbnail(SAMPLE, 8))
    assert np.array_equal(np.asarray(igpt_codec.decompress(target)[0].image), pixels)


def test_file_objects_and_explicit_format() -> None:
    out = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 200, 30)).save(out, format="IGPT", size=4)
    out.seek(0)
    with Image.open(out) as image:
        assert image.size == (4, 4)
        image.load()
        copy = image.copy()
    assert copy.getpixel((0, 0)) == tuple(expected_thumbnail(copy, 4)[0, 0])


def test_frames_seek_and_save_all(tmp_path: Path) -> None:
    target = tmp_path / "three.igpt"
    red = Image.new("RGB", (5, 5), "red")
    grey = Image.new("L", (7, 3), 128)
    with Image.open(SAMPLE) as photo:
        photo.save(target, save_all=True, append_images=[red, grey], size=4)
    with Image.open(target) as image:
        assert image.n_frames == 3 and image.is_animated
        frames = [np.asarray(frame.copy()) for frame in ImageSequence.Iterator(image)]
        image.seek(1)
        assert image.tell() == 1 and image.info["original_size"] == (5, 5)
        assert np.array_equal(np.asarray(image), expected_thumbnail(red, 4))
        image.seek(2)
        assert image.info["original_mode"] == "L"
        with pytest.raises(EOFError):
            image.seek(3)
    assert np.array_equal(frames[0], expected_thumbnail(SAMPLE, 4))
    assert np.array_equal(frames[2], expected_thumbnail(grey, 4))


def test_damaged_and_empty_streams_raise_codec_errors(tmp_path: Path) -> None:
    data = bytearray(igpt_codec.compress(SAMPLE, size=4))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(igpt_codec.FormatError):
        Image.open(io.BytesIO(bytes(data)))
    with pytest.raises(igpt_codec.EmptyStreamError):
        Image.open(io.BytesIO(zero_image_stream()))


RUNTIME_ONLY = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
from PIL import Image
import igpt_codec.pillow

photo, target = sys.argv[1], sys.argv[2]
Image.open(photo).save(target, size=6)
with Image.open(target) as image:
    assert image.format == "IGPT" and image.size == (6, 6), image
    image.load()
leaked = sorted(n for n in sys.modules if n.partition(".")[0] in BLOCKED)
assert not leaked, leaked
print("ROUND TRIP OK")
"""


def test_round_trip_without_torch(tmp_path: Path) -> None:
    """The plugin in a run-time-only interpreter: torch, transformers, optimum blocked."""
    result = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY, str(SAMPLE), str(tmp_path / "x.igpt")],
        capture_output=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert b"ROUND TRIP OK" in result.stdout
    with Image.open(tmp_path / "x.igpt") as image:
        assert np.array_equal(np.asarray(image), expected_thumbnail(SAMPLE, 6))


def test_limits_apply_on_open(monkeypatch: pytest.MonkeyPatch) -> None:
    data = igpt_codec.compress([SAMPLE] * 3, size=1)
    monkeypatch.setattr(igpt_codec.pillow, "LIMITS", igpt_codec.DecodeLimits(max_images=2))
    with pytest.raises(igpt_codec.DecodeLimitError):
        Image.open(io.BytesIO(data))
    monkeypatch.setattr(igpt_codec.pillow, "LIMITS", igpt_codec.DecodeLimits(max_tokens=2))
    with Image.open(io.BytesIO(data)) as image, pytest.raises(igpt_codec.DecodeLimitError):
        image.load()


def test_full_resolution_through_pillow(tmp_path) -> None:
    from PIL import Image

    picture = Image.effect_noise((37, 21), 30).convert("RGB")
    picture.save(tmp_path / "n.igpt", full=True)
    with Image.open(tmp_path / "n.igpt") as im:
        assert im.size == (37, 21) and im.info["full_resolution"]
        im.load()
        decoded = im.convert("RGB")
    (expected,) = igpt_codec.decompress(tmp_path / "n.igpt")
    assert expected.full and decoded.tobytes() == expected.image.tobytes()


def test_a_size_with_full_is_refused(tmp_path) -> None:
    """Issue 25: the plugin accepted a size with full=True and ignored it."""
    from PIL import Image

    picture = Image.effect_noise((9, 5), 30).convert("RGB")
    with pytest.raises(ValueError, match="own size"):
        picture.save(tmp_path / "n.igpt", full=True, size=8)


def test_chains_reach_the_full_resolution_layout(tmp_path) -> None:
    """`chains` is the encoder's option for many-core decoders: the plugin passes it on
    (a 4-chain file has 4 segments) and refuses it without full=True, as the API does."""
    from PIL import Image

    from igpt_codec.format import unpack_stream

    with Image.open(SAMPLE) as photo:  # a photo crop: the model's record, not a PNG
        picture = photo.convert("RGB").crop((0, 0, 128, 32))
    picture.save(tmp_path / "c.igpt", full=True, chains=4)
    (record,) = unpack_stream((tmp_path / "c.igpt").read_bytes())
    assert len(record.header.tiling.segments()) == 4
    with Image.open(tmp_path / "c.igpt") as im:
        im.load()
        assert im.convert("RGB").size == (128, 32)
    with pytest.raises(ValueError, match="chains"):
        picture.save(tmp_path / "d.igpt", chains=4)
