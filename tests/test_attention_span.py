"""An exact graph with a bounded attention span and its ring-buffer cache (issue 23).

With a span S a token sees positions t-S..t only, and the decoder's cache is a ring of S
slots (position p in slot p mod S). These tests prove the tables are the same integers
however the work is cut: one whole-window call, token by token through a ring that wraps
many times, a known-rows call then steps, chunks after a past, a plain linear cache; that
the float banded model and the exact graph agree in bits; that the span is part of the
fingerprint; and that bundles without a span are untouched (tests/test_golden.py decodes
the committed files).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import CALIBRATION_IMAGES

from igpt_codec.core.errors import BundleError
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import (
    EXACT_FREQS,
    EXACT_SPAN_CONTRACT,
    INPUT_IDS,
    PAST_LENGTH,
    POSITION_IDS,
    PROFILE_EXACT,
    SOS,
)
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.kv_cache import KVCache, KVState
from igpt_codec.runtime.positions import GRID, positions
from igpt_codec.runtime.ring_cache import RingCache, stacked

SPAN = 64
TOKENS = 1024


@pytest.fixture(scope="module")
def span_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> Path:
    """The tiny checkpoint (same weights as tiny_bundle) exported with a span of 64."""
    from igpt_codec.export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("span") / "tiny_span"
    export_bundle(
        str(tiny_checkpoint_dir),
        out,
        calibration_images=CALIBRATION_IMAGES,
        attention_span=SPAN,
    )
    return out


@pytest.fixture(scope="module")
def model(span_bundle: Path) -> ExactTokenModel:
    return ExactTokenModel(load_bundle(span_bundle), threads=1)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """int64 [4, 1024]: SOS + tokens of four check photos (32 x 32), real predictions."""
    from igpt_codec.export.exact_export import load_calibration

    tokens = load_calibration()[1][:4]
    return np.concatenate([np.full((4, 1), SOS), tokens[:, :-1]], axis=1)


def grid(batch: int) -> np.ndarray:
    return np.broadcast_to(positions(32, GRID), (batch, TOKENS)).copy()


def one_call(model: ExactTokenModel, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The tables of ids in a single graph call at past 0 (run() would cut it in chunks)."""
    batch, (heads, head_dim) = len(ids), model._heads
    feeds = {INPUT_IDS: ids, POSITION_IDS: pos, PAST_LENGTH: np.array(0, np.int64)}
    for i, name in enumerate(model._past_names):
        shape = (batch, heads, head_dim, 1) if i % 2 == 0 else (batch, heads, 1, head_dim)
        feeds[name] = np.zeros(shape, np.float32)
    return model.session.run([EXACT_FREQS], feeds)[0].astype(np.int64)


@pytest.fixture(scope="module")
def whole(model: ExactTokenModel, photos: np.ndarray) -> np.ndarray:
    return one_call(model, photos, grid(4))


class CountingSession:
    """The model's session, counting graph calls (run() goes through run_with_ort_values)."""

    def __init__(self, session) -> None:
        self.session, self.calls = session, 0

    def run_with_ort_values(self, *args, **kwargs):
        self.calls += 1
        return self.session.run_with_ort_values(*args, **kwargs)


@pytest.mark.parametrize("batch", [1, 3])
def test_run_feeds_long_sequences_in_chunks_of_the_span(
    model: ExactTokenModel, photos: np.ndarray, whole: np.ndarray, batch: int
) -> None:
    """run() of a span bundle cuts a sequence longer than S into calls of S tokens through
    the ring: the tables of one call, with and without keep_cache, from past 0 and after a
    past; keep_cache=False leaves the caller's state as it was."""
    ids, pos, reference = photos[:batch], grid(batch), whole[:batch]
    session = model.session
    try:
        model.session = counting = CountingSession(session)
        for length in (SPAN - 1, SPAN, SPAN + 1, 2 * SPAN + 5, TOKENS):
            for keep in (False, True):
                counting.calls = 0
                start = model.start(batch)
                freqs, state = model.run(ids[:, :length], pos[:, :length], start, keep)
                assert counting.calls == -(-length // SPAN)
                assert freqs.dtype == np.int64 and np.array_equal(freqs, reference[:, :length])
                assert state.length == (length if keep else 0)
                if keep and length < TOKENS:  # the ring after the chunks steps on
                    nxt, _ = model.run(
                        ids[:, length : length + 2], pos[:, length : length + 2], state
                    )
                    assert np.array_equal(nxt, reference[:, length : length + 2])
        past = 37
        _, state = model.run(ids[:, :past], pos[:, :past], model.start(batch))
        for keep in (False, True):
            stop = past + 3 * SPAN + 11
            freqs, after = model.run(ids[:, past:stop], pos[:, past:stop], state, keep)
            assert np.array_equal(freqs, reference[:, past:stop])
            if not keep:  # untouched: it steps on from its own past
                assert after is state and state.length == past
                nxt, _ = model.run(ids[:, past : past + 1], pos[:, past : past + 1], state)
                assert np.array_equal(nxt, reference[:, past : past + 1])
    finally:
        model.session = session


@pytest.mark.parametrize("chunk", [1, 7, SPAN // 2, SPAN - 1])
def test_shorter_chunks_give_the_same_tables_and_ring(
    model: ExactTokenModel, photos: np.ndarray, whole: np.ndarray, chunk: int
) -> None:
    """run(chunk=c) with c below the span (the encoder's ENCODE_CHUNK): calls of c tokens,
    the tables of one call, and a ring the steps go on from as after chunks of S."""
    batch, length = 2, 2 * SPAN + 9
    ids, pos, reference = photos[:batch], grid(batch), whole[:batch]
    session = model.session
    try:
        model.session = counting = CountingSession(session)
        for keep in (False, True):
            counting.calls = 0
            freqs, state = model.run(
                ids[:, :length], pos[:, :length], model.start(batch), keep, chunk
            )
            assert counting.calls == -(-length // chunk)
            assert np.array_equal(freqs, reference[:, :length])
            if keep:
                nxt, _ = model.run(ids[:, length : length + 3], pos[:, length : length + 3], state)
                assert np.array_equal(nxt, reference[:, length : length + 3])
    finally:
        model.session = session


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_run_writes_its_tables_into_out(
    model: ExactTokenModel, photos: np.ndarray, whole: np.ndarray, dtype: type
) -> None:
    """run(out=...) (the encoder's int32 tables): the tables of one call written into the
    caller's array, in chunks or in one call, and that very array returned."""
    batch, length = 2, 2 * SPAN + 9
    for chunk, seq in ((SPAN // 2, length), (None, SPAN - 3)):
        out = np.full((batch, seq, 512), -1, dtype)
        freqs, _ = model.run(
            photos[:batch, :seq], grid(batch)[:, :seq], model.start(batch), False, chunk, out
        )
        assert freqs is out
        assert np.array_equal(out, whole[:batch, :seq])


@pytest.mark.parametrize(
    "out", [np.zeros((2, 5, 512), np.float32), np.zeros((2, 4, 512), np.int32)]
)
def test_run_refuses_an_out_of_the_wrong_type_or_shape(
    model: ExactTokenModel, out: np.ndarray
) -> None:
    ids = np.full((2, 5), SOS)
    with pytest.raises(ValueError, match="out must be int32 or int64 shaped"):
        model.run(ids, grid(2)[:, :5], model.start(2), False, None, out)


@pytest.mark.parametrize("chunk", [0, -3, SPAN + 1])
def test_a_chunk_outside_the_span_is_refused(model: ExactTokenModel, chunk: int) -> None:
    ids = np.full((1, 4), SOS)
    with pytest.raises(ValueError, match="chunk must lie in"):
        model.run(ids, grid(1)[:, :4], model.start(1), True, chunk)


def stepped(model: ExactTokenModel, ids: np.ndarray, state: KVState) -> np.ndarray:
    """Tables of ids[:, state.length:] fed one position at a time through the stepper."""
    stepper = model.stepper(state)
    pos = positions(32, GRID)
    out = [
        stepper.step(ids[:, t], int(pos[t])).astype(np.int64) for t in range(state.length, TOKENS)
    ]
    return np.stack(out, axis=1)


def test_bundle_records_the_span(span_bundle: Path) -> None:
    bundle = load_bundle(span_bundle)
    assert bundle.attention_span == SPAN and bundle.exact and bundle.profile == PROFILE_EXACT
    assert bundle.manifest["graph_contract"] == EXACT_SPAN_CONTRACT
    assert bundle.manifest["io"]["cache_layout"]["ring"] == SPAN
    assert isinstance(ExactTokenModel(bundle).start(2).cache, RingCache)


@pytest.mark.parametrize("batch", [1, 4])
def test_whole_window_equals_steps_through_the_ring(
    model: ExactTokenModel, photos: np.ndarray, whole: np.ndarray, batch: int
) -> None:
    """1,024 steps through a ring of 64 slots (16 wrap-arounds) = one whole-window call."""
    state = model.start(batch)
    first, state = model.run(photos[:batch, :1], grid(batch)[:, :1], state)
    assert state.cache.capacity == SPAN
    rest = stepped(model, photos[:batch], state)
    got = np.concatenate([first, rest], axis=1)
    assert got.min() >= 1
    assert np.array_equal(got, whole[:batch])


def test_known_rows_then_steps_and_chunks(
    model: ExactTokenModel, photos: np.ndarray, whole: np.ndarray
) -> None:
    """A call of 128 tokens at past 0 (longer than the ring: its last 64 positions stay),
    then steps; and chunks of any length after a past (100 at 128, 300 at 228, ...)."""
    known, state = model.run(photos[:, :128], grid(4)[:, :128], model.start(4))
    assert state.length == 128
    got = np.concatenate([known, stepped(model, photos, state)], axis=1)
    assert np.array_equal(got, whole)

    state, parts = model.start(4), []
    for start, stop in [(0, 10), (10, 128), (128, 228), (228, 528), (528, 529), (529, TOKENS)]:
        freqs, state = model.run(photos[:, start:stop], grid(4)[:, start:stop], state)
        parts.append(freqs)
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


def test_ring_equals_linear_cache_and_stacks(
    model: ExactTokenModel, photos: np.ndarray, whole: np.ndarray
) -> None:
    """The graph reads a plain linear cache the same way (slot j = position j), and rings
    of separate calls stack along the batch as the full-resolution decoder stacks them."""
    steps = 300
    state = KVState(KVCache.empty(model.n_layer, (1, *model._heads), 0), 1, 0)
    out = []
    for t in range(steps):
        freqs, state = model.run(photos[:1, t : t + 1], grid(1)[:, t : t + 1], state)
        out.append(freqs[:, 0])
    assert isinstance(state.cache, KVCache) and state.cache.capacity > SPAN
    assert np.array_equal(np.stack(out, axis=1), whole[:1, :steps])

    halves = [model.run(photos[i : i + 2, :96], grid(2)[:, :96], model.start(2))[1] for i in (0, 2)]
    both = stacked(halves)
    assert isinstance(both.cache, RingCache) and both.batch == 4
    assert np.array_equal(stepped(model, photos, both), whole[:, 96:])


def test_an_overwritten_ring_state_is_refused(model: ExactTokenModel, photos: np.ndarray) -> None:
    early, state = None, model.start(1)
    _, early = model.run(photos[:1, :40], grid(1)[:, :40], state)
    _, later = model.run(photos[:1, 40:60], grid(1)[:, 40:60], early)
    # Not wrapped yet: the older state is copied and computes its own tables again.
    again, _ = model.run(photos[:1, 40:41], grid(1)[:, 40:41], early)
    fresh, _ = model.run(photos[:1, :41], grid(1)[:, :41], model.start(1), keep_cache=False)
    assert np.array_equal(again[:, 0], fresh[:, 40])
    _, wrapped = model.run(photos[:1, 60:100], grid(1)[:, 60:100], later)
    with pytest.raises(ValueError, match="no longer holds"):
        model.run(photos[:1, 60:61], grid(1)[:, 60:61], later)
    assert wrapped.length == 100


def test_float_banded_model_and_exact_graph_agree_in_bits(
    tiny_checkpoint_dir: Path, photos: np.ndarray, whole: np.ndarray
) -> None:
    """The torch model with the span (IGPT.forward, banded SDPA) against the exact graph:
    close in bits, and closer than the same weights without the span."""
    import torch
    from transformers import ImageGPTForCausalImageModeling

    from igpt_codec.export.exact_export import coded_bits, float_forward, float_weights
    from igpt_codec.export.igpt_torch import from_transformers

    hf = ImageGPTForCausalImageModeling.from_pretrained(tiny_checkpoint_dir).eval()
    banded, full = from_transformers(hf, SPAN), from_transformers(hf)
    ids, pos = torch.from_numpy(photos), torch.from_numpy(grid(4))
    targets = torch.from_numpy(np.concatenate([photos[:, 1:], photos[:, :1]], axis=1))[:, :-1]
    bits = {}
    with torch.no_grad():
        for name, lean in [("banded", banded), ("full", full)]:
            logp = torch.log_softmax(lean.double()(ids, pos).double(), -1)[:, :-1]
            bits[name] = -float(logp.gather(-1, targets[..., None]).sum()) / math.log(2)
    reference = float_forward(float_weights(banded), photos, grid(4), attention_span=SPAN)
    ref_bits = -float(np.take_along_axis(reference[:, :-1], targets.numpy()[..., None], -1).sum())
    exact_bits = coded_bits(whole[:, :-1], targets.numpy())
    assert abs(ref_bits / math.log(2) / bits["banded"] - 1) < 1e-9
    cost = exact_bits / bits["banded"] - 1
    assert abs(cost) < 0.005, cost  # measured: -0.016% (docs/speed.md)
    assert abs(cost) < abs(exact_bits / bits["full"] - 1)


def test_span_changes_the_fingerprint_and_is_covered(
    span_bundle: Path, tiny_bundle: Path, copy_bundle
) -> None:
    with_span, without = load_bundle(span_bundle), load_bundle(tiny_bundle)
    assert without.attention_span is None
    assert "attention_span" not in without.manifest["model"]
    assert with_span.fingerprint != without.fingerprint
    edited = copy_bundle(span_bundle)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["model"]["attention_span"] = 128
    manifest["io"]["cache_layout"]["ring"] = 128
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="fingerprint mismatch"):
        load_bundle(edited)


def test_export_refuses_a_span_it_cannot_honour(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    from igpt_codec.export.errors import ExportError
    from igpt_codec.export.onnx_export import export_bundle

    with pytest.raises(ExportError, match="exact profile"):
        export_bundle(str(tiny_checkpoint_dir), tmp_path / "f", profile="float", attention_span=64)
    with pytest.raises(ExportError, match="positive integer"):
        export_bundle(str(tiny_checkpoint_dir), tmp_path / "z", attention_span=0)
    assert not (tmp_path / "f").exists() and not (tmp_path / "z").exists()


def test_checkpoint_carries_its_span(tmp_path: Path) -> None:
    """A model trained with a span saves it in config.json (transformers keeps the extra
    attribute), the export reads it back, and a conflicting export argument is refused."""
    from transformers import ImageGPTForCausalImageModeling

    from igpt_codec.export.errors import ExportError
    from igpt_codec.export.igpt_torch import IGPT, IGPTShape, to_transformers
    from igpt_codec.export.make_random_checkpoint import write_preprocessor_config
    from igpt_codec.export.onnx_export import export_bundle

    shape = IGPTShape(n_embd=32, n_layer=1, n_head=2, attention_span=32)
    ckpt = tmp_path / "ckpt"
    to_transformers(IGPT(shape)).save_pretrained(ckpt)
    write_preprocessor_config(
        ckpt, np.load(Path(__file__).parents[1] / "export/data/imagegpt_clusters.npy")
    )
    loaded = ImageGPTForCausalImageModeling.from_pretrained(ckpt)
    assert IGPTShape.from_config(loaded.config).attention_span == 32
    with pytest.raises(ExportError, match="differs from the checkpoint's 32"):
        export_bundle(str(ckpt), tmp_path / "out", attention_span=16)
    assert not (tmp_path / "out").exists()


def test_thumbnail_round_trip_with_a_span_bundle(span_bundle: Path) -> None:
    """The thumbnail coder needs no change: one call to encode, the ring to decode."""
    from igpt_codec import api

    rng = np.random.default_rng(3)
    image = (rng.integers(0, 4, (40, 56, 3)) * 60).astype(np.uint8)
    for size in (32, 12):
        (decoded,) = api.decompress(api.compress(image, model=span_bundle, size=size), span_bundle)
        expected = api.tokenize([image], load_bundle(span_bundle), size)[0]
        assert np.array_equal(decoded.tokens, np.asarray(expected.tokens).reshape(-1))


def test_full_resolution_round_trip_with_a_span(span_bundle: Path, model: ExactTokenModel) -> None:
    """The full-resolution decoder stacks its known-rows states with ring_cache.stacked
    (rings and linear caches alike), so encoder (whole windows) and decoder (known rows,
    then the ring) agree. The known-rows call (129 tokens at past 0) is longer than the
    ring."""
    from igpt_codec.format.records import CODING_ADAPTIVE
    from igpt_codec.pipelines import fullres

    assert fullres.stacked is stacked
    bundle = load_bundle(span_bundle)
    tokens = np.random.default_rng(5).integers(0, 512, (70, 90)).astype(np.int64)
    image = fullres.FullImage(tokens, "RGB")
    header = fullres.make_header(image, bundle.fingerprint, 32, CODING_ADAPTIVE, 4, 32, True)
    record, _ = fullres.encode_full(model, image, header)
    assert np.array_equal(fullres.decode_full(model, record, 0).tokens, tokens)


def test_steps_run_in_their_own_memory_pattern_session(
    span_bundle: Path, tiny_bundle: Path, photos: np.ndarray, whole: np.ndarray
) -> None:
    """A span bundle's stepper runs a session with onnxruntime's memory pattern (the
    whole-window tests above step through it: the same tables), opened once and shared by
    steppers; a session a caller set (a profiler's) is stepped instead; a bundle without a
    span steps its own session."""
    model = ExactTokenModel(load_bundle(span_bundle), threads=1)
    steps = model.step_session
    assert steps is not model.session and steps is model.step_session
    assert steps.get_session_options().enable_mem_pattern
    assert not model.session.get_session_options().enable_mem_pattern
    first, state = model.run(photos[:2, :1], grid(2)[:, :1], model.start(2))
    assert np.array_equal(np.concatenate([first, stepped(model, photos[:2], state)], 1), whole[:2])

    class Counting:
        def __init__(self, session) -> None:
            self.session, self.runs = session, 0

        def io_binding(self):
            return self.session.io_binding()

        def run_with_iobinding(self, binding) -> None:
            self.runs += 1
            self.session.run_with_iobinding(binding)

    model.session = counting = Counting(model.session)
    model.stepper(model.start(1)).step(np.array([SOS]), 0)
    assert counting.runs == 1
    plain = ExactTokenModel(load_bundle(tiny_bundle), threads=1)
    assert plain.step_session is plain.session


def test_a_stepping_decoder_opens_only_the_step_session(
    span_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions open on first use: a thumbnail decoder of a span bundle only steps, so it
    opens the memory-pattern session alone (the whole-sequence one cost ~15 ms a process);
    the first run() opens the other."""
    from igpt_codec.runtime import exact_runner

    opened: list[bool] = []
    real_open = exact_runner.open_session

    def recording_open(*args, **kwargs):
        opened.append(kwargs["mem_pattern"])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(exact_runner, "open_session", recording_open)
    model = ExactTokenModel(load_bundle(span_bundle), threads=1)
    assert opened == []
    stepper = model.stepper(model.start(1))
    stepper.step(np.array([SOS]), 0)
    assert opened == [True]
    model.run(np.array([[SOS]]), np.array([[0]]), model.start(1))
    assert opened == [True, False]
