"""The encoder's `chains` option (issue 23 item 4: files for 8-16-core decoders).

A full-resolution image is cut into chains that decode independently, one per worker.
`chains` sets how many the layout aims for (default 2) through the API and `compress
--chains N --full`; the record stays an ordinary full-resolution record, its header's
segment_windows saying the layout. Here: the segment count each request gives (capped by
the window columns, raised by the 32-window group cap), lossless round trips with any
decoder thread count, and every refusal before any input is opened or output written.

Small crops of one photo through the shipped model keep the file to a few seconds.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_photo
from PIL import Image

import igpt_codec
from igpt_codec import api
from igpt_codec.format import unpack_stream
from igpt_codec.format.records import FullImageRecord
from igpt_codec.pipelines.fullres import PARALLEL_CHAINS, SEGMENT_WINDOWS
from igpt_codec.pipelines.stream import encode
from igpt_codec.runtime.bundle import load_bundle

CLI = Path(__file__).resolve().parents[1] / "cli.py"
PHOTO = "wikipedia-photos/001.png"
BOX = (0, 0, 128, 32)
"""Four 32-pixel window columns, one band: 1, 2 and 4 chains each fit exactly."""


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return shared_photo(PHOTO)


@pytest.fixture(scope="module")
def crop(photo: Image.Image) -> Image.Image:
    return photo.crop(BOX)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(None)


@pytest.fixture(scope="module")
def four_chains(crop: Image.Image) -> bytes:
    return igpt_codec.compress(crop, full=True, chains=4)


def palette_tokens(image: Image.Image, bundle) -> np.ndarray:
    """The palette image the encoder codes, as the API tokenizes it."""
    return api.tokenize([image], bundle, 0, full=True)[0].tokens


def only_full_record(data: bytes) -> FullImageRecord:
    (record,) = unpack_stream(data)
    # The model must code these crops (not a PNG/WebP fallback), or there is no layout.
    assert isinstance(record, FullImageRecord), type(record).__name__
    return record


# --- the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chains", "segments"),
    [(1, 1), (2, 2), (4, 4), (None, PARALLEL_CHAINS), (16, 4)],  # 16: capped at 4 columns
)
def test_chains_set_the_segment_count_and_decode_losslessly(
    crop: Image.Image, bundle, chains: int | None, segments: int
) -> None:
    data = igpt_codec.compress(crop, full=True, chains=chains)
    record = only_full_record(data)
    head = record.header
    assert len(head.tiling.segments()) == segments
    assert head.chain_segments and len(record.segments) == segments  # one record per chain
    assert head.segment_windows == 4 // segments
    (decoded,) = igpt_codec.decompress(data, threads=4)
    assert decoded.full and np.array_equal(decoded.tokens, palette_tokens(crop, bundle))


def test_four_chains_decode_alike_with_one_thread(four_chains: bytes, crop, bundle) -> None:
    (one,) = igpt_codec.decompress(four_chains, threads=1)
    assert np.array_equal(one.tokens, palette_tokens(crop, bundle))


def test_compress_to_and_compress_each_take_chains(crop: Image.Image, four_chains: bytes) -> None:
    whole = four_chains
    buffer = io.BytesIO()
    summary = api.compress_to(buffer, crop, full=True, chains=4)
    assert buffer.getvalue() == whole and summary.stream_bytes == len(whole)
    ((each, _),) = api.compress_each([crop], full=True, chains=4)
    assert each == whole
    assert only_full_record(api.compress(crop, full=True, chains=1)).header.segment_windows == 4


def test_one_chain_still_splits_past_the_group_cap(photo: Image.Image) -> None:
    """More than SEGMENT_WINDOWS (32) window columns: even chains=1 gets two groups."""
    wide = photo.crop((0, 0, 33 * 32 + 5, 6))  # 34 columns, one band
    record = only_full_record(igpt_codec.compress(wide, full=True, chains=1))
    assert record.header.segment_windows == SEGMENT_WINDOWS
    assert len(record.header.tiling.segments()) == 2


@pytest.mark.parametrize("chains", [0, -3])
def test_chains_below_one_is_a_value_error_before_any_input_is_opened(
    tmp_path: Path, chains: int
) -> None:
    missing = tmp_path / "no-such-photo.png"  # opening it would raise InputImageError
    with pytest.raises(ValueError, match="chains must be at least 1"):
        igpt_codec.compress(missing, full=True, chains=chains)
    with pytest.raises(ValueError, match="chains must be at least 1"):
        api.compress_to(io.BytesIO(), missing, full=True, chains=chains)
    with pytest.raises(ValueError, match="chains must be at least 1"):
        next(api.compress_each(missing, full=True, chains=chains))


@pytest.mark.parametrize("chains", [True, 2.0, "4"])
def test_chains_that_is_not_an_integer_is_a_type_error(tmp_path: Path, chains: object) -> None:
    with pytest.raises(TypeError, match="chains must be an integer"):
        igpt_codec.compress(tmp_path / "x.png", full=True, chains=chains)  # type: ignore[arg-type]


def test_chains_without_full_is_a_value_error(crop: Image.Image) -> None:
    with pytest.raises(ValueError, match="needs full=True"):
        igpt_codec.compress(crop, chains=4)
    with pytest.raises(ValueError, match="needs full=True"):
        next(api.compress_each([crop], size=8, chains=2))


def test_the_pipeline_checks_chains_before_any_model_work(crop: Image.Image, bundle) -> None:
    (image,) = api.tokenize([crop], bundle, 0, full=True)
    with pytest.raises(ValueError, match="chains must be at least 1"):
        encode([image], bundle, chains=0)  # raised at the call, not at the first record


# --- the command line ------------------------------------------------------------------------


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip


def test_cli_chains_4_full_round_trip(photo: Image.Image, bundle, tmp_path: Path) -> None:
    image = photo.crop((40, 30, 168, 54))  # 128 x 24: four window columns
    image.save(tmp_path / "p.png")
    done = run_cli("compress", "--full", "--chains", "4", "p.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = run_cli("info", "--json", "p.png.igpt", cwd=tmp_path)
    (row,) = json.loads(info.stdout)["records"]
    assert row["kind"] == "full" and row["segments"] == 4 and row["chain_segments"] is True
    back = run_cli("decompress", "p.png.igpt", "-o", "back.png", "--threads", "4", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    with Image.open(tmp_path / "back.png") as decoded:
        rgb = np.asarray(decoded.convert("RGB"))
    tokens = palette_tokens(image, bundle)
    assert np.array_equal(rgb, np.rint(127.5 * (bundle.palette[tokens] + 1)).astype(np.uint8))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--chains", "3"), "--chains sets the layout of --full images: add --full"),
        (("--chains", "0", "--full"), "'--chains': 0 is not in the range 1<=x<=256"),
        (("--chains", "257", "--full"), "'--chains': 257 is not in the range 1<=x<=256"),
        (("--chains", "0"), "'--chains': 0 is not in the range 1<=x<=256"),
    ],
)
def test_cli_chains_usage_errors_write_nothing(
    crop: Image.Image, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    crop.save(tmp_path / "p.png")
    done = run_cli("compress", "p.png", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr  # click's usage block
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p.png"]
