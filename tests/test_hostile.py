"""Hostile full-resolution streams (issue 26, decode side): each test builds its file from
format/SPEC.md's fields (a kind-3 header, kind-4 segments with empty payloads, which
decode to token 0, and correct token checks) and bounds its own run time.

The forged files are valid: they decode, slowly. What is tested is that the decoder
refuses them from the header, before any model work or allocation (a progress callback
that fails the test proves no model work began), bounds their memory, and stops its
worker threads at once on a signal or an error.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from igpt_codec import api
from igpt_codec.core.errors import BundleError
from igpt_codec.format.classical import CODEC_PNG, ClassicalImageHeader, ClassicalImageRecord
from igpt_codec.format.container import SegmentCheck, pack_stream
from igpt_codec.format.errors import CodecError, DecodeLimitError
from igpt_codec.format.records import CODING_EXACT, FullImageHeader, FullImageRecord, Segment
from igpt_codec.format.tiling import Tiling
from igpt_codec.pipelines import fullres, limits
from igpt_codec.pipelines.limits import DecodeLimits, full_image_work
from igpt_codec.pipelines.stream import decode
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.exact_runner import ExactTokenModel


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(None)


def forged(
    fingerprint: bytes,
    width: int,
    height: int,
    *,
    context: int = 4,
    windows: int = 32,
    chain: bool = True,
) -> FullImageRecord:
    """A full-resolution record every token of which is 0: empty payloads, and the token
    checks SPEC.md defines over the right number of zeros per segment."""
    header = FullImageHeader(
        fingerprint, width, height, "RGB", 32, context, windows, CODING_EXACT, chain_segments=chain
    )
    tiling = header.tiling
    bands, groups = tiling.bands(), tiling.segments()
    counts = [0] * tiling.record_count
    for number, band in enumerate(bands):
        for group, columns in enumerate(groups):
            coded = sum(band.coded_rows * tiling.real_width(c) for c in columns)
            counts[tiling.segment_index(number, group)] += coded
    segments = tuple(
        Segment(b"", SegmentCheck(header, i).add(np.zeros(n, np.int64)).value)
        for i, n in enumerate(counts)
    )
    return FullImageRecord(header, segments)


def no_model_work(done: int, total: int | None) -> None:
    pytest.fail(f"model work began ({done} tokens) on a stream the header should refuse")


def test_a_forged_all_zero_file_is_valid(bundle) -> None:
    """The building block: such a file decodes (so the refusals below are the limits')."""
    record = forged(bundle.fingerprint, 40, 36, windows=2)
    (image,) = api.decompress(pack_stream([record]), model=bundle, threads=1)
    assert image.tokens.shape == (36, 40) and not image.tokens.any()


# --- finding 1: work chosen by the header ------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"windows": 255}, "255 windows per segment; this codec writes at most 32"),
        ({"windows": 33}, "33 windows per segment"),
        ({"context": 24}, "24 context rows; this codec writes at most 4"),
        ({"context": 5}, "5 context rows"),
    ],
)
def test_layouts_the_encoder_never_writes_are_refused_from_the_header(
    bundle, changes, match
) -> None:
    data = pack_stream([forged(bundle.fingerprint, 40, 40, **changes)])
    with pytest.raises(DecodeLimitError, match=match) as info:
        api.decompress(data, model=bundle, threads=1, progress=no_model_work)
    assert "\n" not in str(info.value) and "a 40x40 image" in str(info.value)


def test_the_caller_may_opt_in_to_other_layouts(bundle) -> None:
    record = forged(bundle.fingerprint, 40, 40, windows=255, context=24)
    allow = DecodeLimits(max_segment_windows=255, max_context_rows=24)
    (image,) = api.decompress(pack_stream([record]), model=bundle, threads=1, limits=allow)
    assert image.tokens.shape == (40, 40) and not image.tokens.any()


def test_pixels_per_image_are_capped_by_default(bundle) -> None:
    """4097 x 4097 (16.8 MP) is over the default; before, it decoded for hours."""
    data = pack_stream([forged(bundle.fingerprint, 4097, 4097)])
    started = time.process_time()
    with pytest.raises(DecodeLimitError, match=r"16785409 pixels, more than .* 16777216"):
        api.decompress(data, model=bundle, threads=1, progress=no_model_work)
    assert time.process_time() - started < 5


def test_work_per_stream_is_charged_from_the_headers(bundle) -> None:
    """A narrow, tall image costs more per pixel (a one-window step); work adds up over a
    stream's images and the image that passes the limit is named."""
    narrow = forged(bundle.fingerprint, 8, 2000, windows=1)
    wide = forged(bundle.fingerprint, 128, 125, windows=4)
    assert narrow.header.token_count == 16000 == wide.header.token_count
    assert full_image_work(narrow.header) > 2 * full_image_work(wide.header)
    budget = DecodeLimits(max_work=full_image_work(narrow.header) + 10)
    records = [narrow, narrow]
    with pytest.raises(DecodeLimitError, match="record 1: a 8x2000 image brings the stream"):
        list(decode(records, bundle, threads=1, limits=budget, progress=no_model_work))


@pytest.mark.parametrize(
    ("width", "height", "context", "windows"),
    [(1, 1, 0, 1), (40, 40, 4, 1), (33, 1000, 24, 3), (1030, 3, 4, 17), (8160, 8224, 0, 255)],
)
def test_work_formula_counts_every_band_and_group(width, height, context, windows) -> None:
    tiling = Tiling(width, height, 32, context, windows)
    cells = sum(b.rows * tiling.window_width for b in tiling.bands())
    steps = sum(len(g) + limits.STEP_OVERHEAD for g in tiling.segments())
    header = FullImageHeader(bytes(8), width, height, "RGB", 32, context, windows)
    assert full_image_work(header) == cells * steps


def test_limits_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGPT_CODEC_MAX_PIXELS", "1000")
    monkeypatch.setenv("IGPT_CODEC_MAX_WORK", "2000")
    assert (DecodeLimits().max_pixels, DecodeLimits().max_work) == (1000, 2000)
    assert DecodeLimits(max_pixels=5).max_pixels == 5
    monkeypatch.setenv("IGPT_CODEC_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="IGPT_CODEC_MAX_PIXELS must be a positive integer"):
        DecodeLimits()


# --- finding 2: memory multiplied by the header ----------------------------------------------


def test_the_known_rows_call_is_cut_into_small_batches(bundle) -> None:
    """255 windows x 24 context rows once made one call of 255 x 769 tokens (7 GB)."""
    model = ExactTokenModel(bundle, threads=1)
    batches = []
    run = model.run

    def spy(ids, *args, **kwargs):
        batches.append(ids.shape[0])
        return run(ids, *args, **kwargs)

    model.run = spy  # type: ignore[method-assign]
    record = forged(bundle.fingerprint, 40 * 32, 40, windows=40, context=24)
    image = fullres.decode_full(model, record, 0, workers=1)
    assert not image.tokens.any()
    assert max(batches) <= limits.KNOWN_ROWS_CHUNK < 40


def test_memory_is_estimated_from_the_header_before_any_allocation(bundle) -> None:
    record = forged(bundle.fingerprint, 8160, 40, windows=255, context=24)
    allow = DecodeLimits(max_segment_windows=255, max_context_rows=24, max_memory=200 << 20)
    with pytest.raises(DecodeLimitError, match=r"8160x40 image .* needs about \d+ MiB") as info:
        list(decode([record], bundle, threads=4, limits=allow, progress=no_model_work))
    assert "max_memory" in str(info.value)


def test_fewer_workers_when_their_memory_would_not_fit(bundle, monkeypatch) -> None:
    record = forged(bundle.fingerprint, 2048, 40, windows=8)
    one = limits.full_image_memory(record.header, 2 * 4 * 1, 1)
    assert limits.full_image_memory(record.header, 2 * 4 * 1, 2) > one
    seen = []
    real = fullres.decode_full

    def spy(*args, workers, **kwargs):
        seen.append(workers)
        return real(*args, workers=workers, **kwargs)

    monkeypatch.setattr("igpt_codec.pipelines.fullres.decode_full", spy)
    cache = 2 * 4 * bundle.n_layer * bundle.n_head * bundle.head_dim
    fits_two = limits.full_image_memory(record.header, cache, 2)
    list(decode([record], bundle, threads=8, limits=DecodeLimits(max_memory=fits_two)))
    assert seen == [2]


@pytest.mark.parametrize(
    "failure",
    [MemoryError(), BundleError("the model graph failed to run: Failed to allocate memory")],
)
def test_running_out_of_memory_names_the_input_not_the_model(bundle, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr("igpt_codec.pipelines.fullres.decode_full", fail)
    data = pack_stream([forged(bundle.fingerprint, 40, 40)])
    with pytest.raises(DecodeLimitError, match=r"a 40x40 image .* needs more memory") as info:
        api.decompress(data, model=bundle, threads=1)
    assert "model" not in str(info.value).split("needs")[1]


def test_other_model_failures_still_blame_the_model(bundle, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise BundleError("the model graph failed to run: bad input")

    monkeypatch.setattr("igpt_codec.pipelines.fullres.decode_full", fail)
    with pytest.raises(BundleError, match="bad input"):
        api.decompress(pack_stream([forged(bundle.fingerprint, 40, 40)]), model=bundle)


# --- finding 3: signals and errors reach the worker threads ---------------------------------


def test_a_chains_error_stops_the_other_chains_at_once(bundle, monkeypatch) -> None:
    """Chain 1 fails at once; chain 0 must not run on to its end (the pool used to wait
    for it before the cancel event was set)."""
    record = forged(bundle.fingerprint, 64, 3000, windows=1)
    real = fullres._decode_band

    def band(model, tiling, image, band, columns, *args):
        if columns == [1]:
            raise CodecError("chain 1 fails")
        return real(model, tiling, image, band, columns, *args)

    monkeypatch.setattr(fullres, "_decode_band", band)
    model = ExactTokenModel(bundle, threads=1)
    started = time.monotonic()
    with pytest.raises(CodecError, match="chain 1 fails"):
        fullres.decode_full(model, record, 0, workers=2)
    assert time.monotonic() - started < 3


SLOW_DECODE = """
import sys
from igpt_codec.cli import main
sys.argv = ["igpt-codec", "decompress", "-q", "--threads", "2", sys.argv[1], "-o", sys.argv[2]]
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_stop_a_full_resolution_decode_within_two_seconds(bundle, tmp_path, signum):
    """A 64 x 3000 image (two chains, minutes of work): the CLI must exit within 2 s of
    the signal, with its exit code and nothing left behind."""
    stream = tmp_path / "slow.igpt"
    stream.write_bytes(pack_stream([forged(bundle.fingerprint, 64, 3000, windows=1)]))
    out = tmp_path / "out"
    out.mkdir()
    # The CLI respects a signal ignored at start (nohup); a test run launched with SIGTERM or
    # SIGHUP ignored (a background CI job) must not pass that on to the child.
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_DECODE, str(stream), str(out / "slow.png")],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL),
    )
    try:
        time.sleep(4)  # start-up and model load; then the chains are running
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        sent = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=10)
        waited = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
    assert waited < 2, f"exited {waited:.1f} s after signal {signum}"
    assert process.returncode == 128 + signum
    assert not any(out.iterdir())


# --- finding 8: the charge at the record's header -------------------------------------------


class CountingReads(io.RawIOBase):
    """A binary file that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = self._data.read(n)
        self.read_bytes += len(out)
        return out


def test_a_header_is_refused_before_its_segments_are_read(bundle) -> None:
    """75,000 segment records (no CHAIN bit, one window per segment) behind a header over
    the pixel limit: the reader used to read every one (the issue's 8 MB file: 172 MB and
    5.7 s) before the decoder's limits refused the header."""
    header = FullImageHeader(bundle.fingerprint, 8160, 8224, "RGB", 32, 4, 1, CODING_EXACT)
    count = header.tiling.record_count
    assert count > 70_000
    data = pack_stream([FullImageRecord(header, (Segment(b"", 0),) * count)])
    for read in (api.decompress, lambda source, **kw: list(api.iter_decompress(source, **kw))):
        source = CountingReads(data)
        with pytest.raises(DecodeLimitError, match=r"a 8160x8224 image has 67107840 pixels"):
            read(source, model=bundle, threads=1)
        assert source.read_bytes < 100, f"{source.read_bytes} of {len(data)} bytes read"


def test_classical_images_are_held_to_the_pixel_cap(bundle) -> None:
    """Kinds 5 and 6 cost no model work, but Pillow allocates their pixels whole."""
    header = ClassicalImageHeader(bundle.fingerprint, 5000, 4000, "P", CODEC_PNG, 1)
    record = ClassicalImageRecord(header, b"\0", 0)
    with pytest.raises(DecodeLimitError, match=r"a 5000x4000 image has 20000000 pixels"):
        list(decode([record], bundle, threads=1, progress=no_model_work))
    with pytest.raises(DecodeLimitError, match="200 pixels"):
        small = ClassicalImageHeader(bundle.fingerprint, 20, 10, "P", CODEC_PNG, 1)
        record = ClassicalImageRecord(small, b"\0", 0)
        list(decode([record], bundle, limits=DecodeLimits(max_pixels=199)))


def test_work_is_carried_across_concatenated_streams_of_two_models(bundle) -> None:
    """Runs of records under different models are decoded by separate calls; each used to
    get the whole max_work again, so alternating models multiplied the limit."""
    tiny_dir = Path(__file__).resolve().parent / "golden" / "model"
    tiny = load_bundle(tiny_dir)
    records = [forged(tiny.fingerprint, 40, 40), forged(bundle.fingerprint, 40, 40)]
    work = full_image_work(records[0].header)
    allow = DecodeLimits(max_work=work + work // 2)
    images = api.iter_decode(records, model=tiny_dir, threads=1, limits=allow)
    first = next(images)
    assert first.tokens.shape == (40, 40)
    with pytest.raises(DecodeLimitError, match="record 0: a 40x40 image asks for"):
        next(images)
