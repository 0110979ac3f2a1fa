"""Issue 26's seams: the decoder's limits from the CLI (flags, environment), the readers
outside the API (CLI decompress, the Pillow plugin) checking each full-resolution header
before its segments are read, the compress summary of an image stored as PNG/WebP, and
compress_each refusing a size with full=True. Each test failed before its fix.

Hostile files are built as tests/test_hostile.py builds them (its `forged` and
`CountingReads`): valid all-zero full-resolution records whose headers ask too much.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_hostile import CountingReads, forged

from igpt_codec import api
from igpt_codec.cli import cli
from igpt_codec.cli.limits import ByteSize, flag_wording
from igpt_codec.format.container import pack_stream
from igpt_codec.format.errors import DecodeLimitError
from igpt_codec.format.records import CODING_EXACT, FullImageHeader, FullImageRecord, Segment
from igpt_codec.runtime.bundle import load_bundle

decompress_module = importlib.import_module("igpt_codec.cli.decompress")
"""The module (igpt_codec.cli.decompress as an attribute is the click command)."""


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(None)


@pytest.fixture(scope="module")
def many_segments(bundle) -> bytes:
    """8160 x 8224 (over the pixel limit), one window per segment: 75,000 segment records
    behind one header (600 KB), as in the issue's 8 MB file."""
    header = FullImageHeader(bundle.fingerprint, 8160, 8224, "RGB", 32, 4, 1, CODING_EXACT)
    count = header.tiling.record_count
    assert count > 70_000
    return pack_stream([FullImageRecord(header, (Segment(b"", 0),) * count)])


def invoke(*args: str, env: dict[str, str] | None = None):
    """The CLI in this process (no onnxruntime start-up per case)."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def error_line(result) -> str:
    """The one line a failure prints: 'error: ...' (exit 1) or click's 'Error: ...' (2)."""
    lines = [line for line in result.output.splitlines() if line.lower().startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_cli_decompress_refuses_a_header_before_reading_its_segments(
    many_segments: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the CLI read every segment record (its own iter_records, no on_image)."""
    path = tmp_path / "many.igpt"
    path.write_bytes(many_segments)
    opened: list[CountingReads] = []

    @contextlib.contextmanager
    def counting_input(name: str) -> Iterator[CountingReads]:
        opened.append(CountingReads(Path(name).read_bytes()))
        yield opened[-1]

    monkeypatch.setattr(decompress_module, "open_input", counting_input)
    result = invoke("decompress", "-t", str(path))
    assert opened and opened[0].read_bytes < 100, f"{opened[0].read_bytes} bytes read"
    assert result.exit_code == 1
    assert "a 8160x8224 image has 67107840 pixels" in error_line(result)
    assert "raise --max-pixels or IGPT_CODEC_MAX_PIXELS" in error_line(result)


def test_pillow_refuses_a_header_on_open_before_reading_its_segments(
    many_segments: bytes,
) -> None:
    """Before, Image.open read all 75,000 segment records and accepted the file."""
    import igpt_codec.pillow  # registers the format

    class Seekable(io.BytesIO):
        read_bytes = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            self.read_bytes += len(out)
            return out

    # Our plugin alone: once every Pillow plugin is loaded (another test saved a WebP or
    # JPEG XL file), Pillow first lets plugins without a magic check read the file (1,911
    # bytes measured), which is Pillow's doing, not this plugin's.
    source = Seekable(many_segments)
    with pytest.raises(DecodeLimitError, match=r"a 8160x8224 image has 67107840 pixels"):
        Image.open(source, formats=[igpt_codec.pillow.FORMAT])
    assert source.read_bytes < 200, f"{source.read_bytes} of {len(many_segments)} bytes read"
    with pytest.raises(DecodeLimitError, match=r"a 8160x8224 image has 67107840 pixels"):
        Image.open(io.BytesIO(many_segments))  # every plugin: still refused at the header


def test_pillow_limits_reach_the_header_check(bundle, monkeypatch) -> None:
    import igpt_codec.pillow as plugin
    from igpt_codec import DecodeLimits

    data = pack_stream([forged(bundle.fingerprint, 40, 36, windows=2)])
    monkeypatch.setattr(plugin, "LIMITS", DecodeLimits(max_pixels=1000))
    with pytest.raises(DecodeLimitError, match="1440 pixels"):
        Image.open(io.BytesIO(data))


@pytest.fixture(scope="module")
def files(bundle, tmp_path_factory) -> dict[str, Path]:
    """Small forged streams: 'ok' decodes at the defaults (40 x 36, 2 windows), 'layout'
    asks for 255 windows per segment (refused unless --allow-any-layout)."""
    work = tmp_path_factory.mktemp("limits")
    made = {
        "ok": forged(bundle.fingerprint, 40, 36, windows=2),
        "layout": forged(bundle.fingerprint, 40, 36, windows=255),
    }
    paths = {}
    for name, record in made.items():
        paths[name] = work / f"{name}.igpt"
        paths[name].write_bytes(pack_stream([record]))
    return paths


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--max-pixels", "1000"], "1440 pixels, more than the decoder's limit of 1000 "
         "(raise --max-pixels"),
        (["--max-work", "100"], "more than the decoder's limit of 100 (raise --max-work"),
        (["--max-memory", "1M"], "more than the decoder's limit of 1 MiB (raise --max-memory"),
    ],
)  # fmt: skip
def test_each_limit_flag_is_applied_and_named(files, flags, names) -> None:
    result = invoke("decompress", "-t", *flags, str(files["ok"]))
    assert result.exit_code == 1
    assert names in error_line(result)


def test_flags_raise_the_limits_and_override_the_environment(files) -> None:
    env = {"IGPT_CODEC_MAX_PIXELS": "1000"}
    refused = invoke("decompress", "-t", str(files["ok"]), env=env)
    assert refused.exit_code == 1
    assert "IGPT_CODEC_MAX_PIXELS" in error_line(refused)
    result = invoke("decompress", "-t", "--max-pixels", "1440", "--max-memory", "2G",
                    str(files["ok"]), env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "decoded and checked: OK" in result.output


def test_other_layouts_need_the_opt_in(files) -> None:
    refused = invoke("decompress", "-t", str(files["layout"]))
    assert refused.exit_code == 1
    line = error_line(refused)
    assert "255 windows per segment" in line and "pass --allow-any-layout" in line
    result = invoke("decompress", "-t", "--allow-any-layout", str(files["layout"]))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--max-memory", "2X"], None, "Invalid value for '--max-memory'"),
        (["--max-memory", "0"], None, "Invalid value for '--max-memory'"),
        (["--max-memory", "1.5G"], None, "Invalid value for '--max-memory'"),
        (["--max-pixels", "0"], None, "Invalid value for '--max-pixels'"),
        (["--max-work", "lots"], None, "Invalid value for '--max-work'"),
        ([], {"IGPT_CODEC_MAX_WORK": "abc"}, "IGPT_CODEC_MAX_WORK must be a positive integer"),
        ([], {"IGPT_CODEC_MAX_MEMORY": "2G"}, "IGPT_CODEC_MAX_MEMORY must be a positive"),
    ],
)
def test_bad_limit_values_are_one_line_usage_errors(files, args, env, names) -> None:
    result = invoke("decompress", "-t", *args, str(files["ok"]), env=env)
    assert result.exit_code == 2, result.output
    assert names in error_line(result)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("512M", 512 << 20), ("2G", 2 << 30), ("2g", 2 << 30), ("2GiB", 2 << 30),
     ("2GB", 2 << 30), ("64K", 64 << 10), ("1T", 1 << 40)],
)  # fmt: skip
def test_sizes_accept_the_usual_suffixes(text: str, size: int) -> None:
    assert ByteSize().convert(text, None, None) == size


def test_help_documents_the_flags() -> None:
    for command in ("decompress", "bench"):
        text = invoke(command, "--help").output
        for flag in ("--max-pixels", "--max-work", "--max-memory", "--allow-any-layout"):
            assert flag in text, (command, flag)
    assert "IGPT_CODEC_MAX_PIXELS" in invoke("decompress", "--help").output


def test_bench_decodes_under_the_limits(tmp_path: Path) -> None:
    """bench decodes what it compressed: a --full photo over --max-pixels is refused."""
    path = tmp_path / "small.png"
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(path)
    result = invoke("bench", "--full", "--threads", "1", "--max-pixels", "40", str(path))
    assert result.exit_code == 1
    assert "48 pixels" in error_line(result) and "--max-pixels" in error_line(result)
    assert invoke("bench", "--full", "--threads", "1", str(path)).exit_code == 0


def test_flag_wording_keeps_other_advice() -> None:
    assert flag_wording("raise DecodeLimits.max_tokens to decode it") == (
        "raise DecodeLimits.max_tokens to decode it"
    )
    assert flag_wording("(raise DecodeLimits.max_context_rows to decode it)") == (
        "(pass --allow-any-layout to decode it)"
    )


# --- compress: what the summary says, and size with full=True --------------------------------


def repeated_tile() -> np.ndarray:
    """An image the encoder keeps as WebP lossless: a 16 x 16 tile of random colours,
    repeated. The model cannot predict a tile's first copy and its levels do not reach the
    copies the way WebP's backward references do. (The line art used before, rows every 3
    and columns every 5, is now coded smaller by the model: v6 with coding 3's levels.)"""
    tile = np.random.default_rng(3).integers(0, 256, (16, 16, 3), np.uint8)
    return np.tile(tile, (4, 6, 1))


def test_full_summary_says_what_a_classical_record_is_stored_as(tmp_path: Path) -> None:
    """Before: 'model ideal X bits/token' for an image the model did not code."""
    path = tmp_path / "tiles.png"
    Image.fromarray(repeated_tile()).save(path)
    result = invoke("compress", "--full", "--threads", "1", str(path))
    assert result.exit_code == 0, result.output
    assert "stored as WebP lossless" in result.output or "stored as PNG" in result.output
    assert "model ideal" not in result.output
    (_, summary), = api.compress_each([repeated_tile()], full=True, threads=1)  # fmt: skip
    assert len(summary.stored_as) == 1 and np.isnan(summary.ideal_bits_per_token)


def test_a_mixed_stream_gives_the_ideal_of_what_the_model_coded(tmp_path: Path) -> None:
    photo = np.random.default_rng(7).integers(0, 256, (2, 2, 3), np.uint8)
    buffer = io.BytesIO()
    summary = api.compress_to(buffer, [repeated_tile(), photo], full=True, threads=1)
    if summary.stored_as != ("WebP lossless",) and summary.stored_as != ("PNG",):
        pytest.skip(f"the encoder stored {summary.stored_as}: not a mixed stream here")
    assert summary.model_tokens == 4
    from igpt_codec.cli.compress import compress_summary

    line = compress_summary("x.igpt", summary, None)
    assert "over the 1 image the model coded; 1 stored as" in line


def test_compress_each_refuses_a_size_with_full() -> None:
    """Before: the size was silently ignored (compress and compress_to refused it)."""
    with pytest.raises(ValueError, match="size=8 is a thumbnail's side"):
        list(api.compress_each([repeated_tile()], size=8, full=True))
