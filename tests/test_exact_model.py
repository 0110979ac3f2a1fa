"""ExactTokenModel: integer tables that do not depend on how the work is cut.

Whole sequence against token by token (across cache growths), batch rows against rows
alone, 1 against 2 threads, fresh sessions, and onnxruntime's highest graph optimisation
level: every pair must give the same integers, not merely close ones. Cross-machine and
cross-release equality is the portability suite's (tests/harness/portability.py) and the golden
files' (tests/test_golden.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import PHOTO_STEPS as STEPS

from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.exact_runner import ExactTokenModel
from igpt_codec.runtime.float_runner import TokenModel
from igpt_codec.runtime.positions import GRID, positions
from igpt_codec.runtime.session import make_session_options


def grid(batch: int, steps: int = STEPS) -> np.ndarray:
    return np.broadcast_to(positions(32, GRID)[:steps], (batch, steps)).copy()


def stepwise(model: ExactTokenModel, ids: np.ndarray) -> np.ndarray:
    state = model.start(ids.shape[0])
    pos = grid(ids.shape[0], ids.shape[1])
    out = []
    for t in range(ids.shape[1]):
        freqs, state = model.run(ids[:, t : t + 1], pos[:, t : t + 1], state)
        out.append(freqs[:, 0])
    return np.stack(out, axis=1)


def whole(model: ExactTokenModel, ids: np.ndarray) -> np.ndarray:
    freqs, _ = model.run(ids, grid(*ids.shape), model.start(ids.shape[0]), keep_cache=False)
    return freqs


@pytest.fixture(scope="module")
def reference(tiny_bundle: Path, photo_sequences: np.ndarray) -> np.ndarray:
    return whole(ExactTokenModel(load_bundle(tiny_bundle), threads=1), photo_sequences)


def test_tables_are_codable(reference: np.ndarray) -> None:
    assert reference.dtype == np.int64 and reference.shape == (4, STEPS, 512)
    assert reference.min() >= 1 and reference.sum(-1).max() < 2**32
    assert reference.max() == 2**20  # the most likely symbol of every row gets 2^20


def test_whole_sequence_equals_token_by_token(
    tiny_bundle: Path, photo_sequences: np.ndarray, reference: np.ndarray
) -> None:
    stepped = stepwise(ExactTokenModel(load_bundle(tiny_bundle), threads=1), photo_sequences)
    assert np.array_equal(stepped, reference)


def test_stepper_equals_run(
    tiny_bundle: Path, photo_sequences: np.ndarray, reference: np.ndarray
) -> None:
    """The decoder's IOBinding loop gives run()'s integers, across cache growths, from a
    state that run() built (the full-resolution decoder's known rows), and leaves a state
    that run() can continue from."""
    model = ExactTokenModel(load_bundle(tiny_bundle), threads=1)
    ids, pos = photo_sequences, grid(*photo_sequences.shape)
    first = 70  # past the first cache chunk
    freqs, state = model.run(ids[:, :first], pos[:, :first], model.start(len(ids)))
    stepper = model.stepper(state)
    got = [freqs[:, -1].copy()]
    for t in range(first, ids.shape[1] - 1):
        got.append(stepper.step(ids[:, t], int(pos[0, t])).copy())
    assert np.array_equal(np.stack(got, axis=1), reference[:, first - 1 : -1])
    assert stepper.state.length == ids.shape[1] - 1
    last, _ = model.run(ids[:, -1:], pos[:, -1:], stepper.state)
    assert np.array_equal(last[:, 0], reference[:, -1])


def test_stepper_refuses_positions_past_the_model(tiny_bundle: Path) -> None:
    model = ExactTokenModel(load_bundle(tiny_bundle), threads=1)
    stepper = model.stepper(model.start(2))
    for bad in (-1, 1024):
        with pytest.raises(ValueError):
            stepper.step(np.full(2, SOS), bad)
    stepper.step(np.full(2, SOS), 0)
    model.run(np.zeros((2, 1), np.int64), np.ones((2, 1), np.int64), stepper.state)
    with pytest.raises(ValueError):  # that state's cache was stepped elsewhere
        stepper.step(np.zeros(2, np.int64), 1)


def test_batch_rows_threads_and_sessions(
    tiny_bundle: Path, photo_sequences: np.ndarray, reference: np.ndarray
) -> None:
    bundle = load_bundle(tiny_bundle)
    two_threads = ExactTokenModel(bundle, threads=2)
    for row in range(len(photo_sequences)):
        assert np.array_equal(whole(two_threads, photo_sequences[row : row + 1])[0], reference[row])
    assert np.array_equal(
        whole(ExactTokenModel(bundle, threads=1), photo_sequences[::-1]), reference[::-1]
    )


def test_graph_optimisation_level_does_not_matter(
    tiny_bundle: Path, photo_sequences: np.ndarray, reference: np.ndarray
) -> None:
    """Fusions of the highest level change float results; on integers they cannot."""
    bundle = load_bundle(tiny_bundle)
    model = ExactTokenModel(bundle, threads=1)
    options = make_session_options(1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model.session = ort.InferenceSession(
        str(bundle.model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    assert np.array_equal(whole(model, photo_sequences), reference)


def test_close_to_the_float_model(
    tiny_bundle: Path, float_bundle: Path, photo_sequences: np.ndarray, reference: np.ndarray
) -> None:
    """Same weights: the integer model costs at most a few percent more bits on photos."""
    float_model = TokenModel(load_bundle(float_bundle), threads=1)
    probs, _ = float_model.run(photo_sequences[:, :-1], float_model.start(4))
    targets = photo_sequences[:, 1:]
    float_bits = -np.log2(np.take_along_axis(probs, targets[..., None], -1)).sum()
    table = reference[:, :-1].astype(np.float64)
    chosen = np.take_along_axis(table, targets[..., None], -1)[..., 0]
    exact_bits = -np.log2(chosen / table.sum(-1)).sum()
    assert float_bits > 0 and abs(exact_bits / float_bits - 1) < 0.05


def test_positions_are_an_input(tiny_bundle: Path, photo_sequences: np.ndarray) -> None:
    model = ExactTokenModel(load_bundle(tiny_bundle), threads=1)
    ids = photo_sequences[:1, :40]
    side8 = positions(8, GRID)[None, :40]  # rows of 8 at 0..7, 32..39, 64..71, ...
    on_grid, _ = model.run(ids, side8, model.start(1))
    in_raster, _ = model.run(ids, np.arange(40)[None, :], model.start(1))
    assert np.array_equal(on_grid[:, :8], in_raster[:, :8])  # the first row coincides
    assert not np.array_equal(on_grid[:, 8:], in_raster[:, 8:])


def test_bad_inputs(tiny_bundle: Path) -> None:
    model = ExactTokenModel(load_bundle(tiny_bundle), threads=1)
    state = model.start(2)
    ids = np.full((2, 1), SOS)
    for bad_ids, bad_pos in (
        (ids, np.zeros((2, 2), np.int64)),
        (np.full((2, 1), 513), np.zeros((2, 1), np.int64)),
        (ids, np.full((2, 1), 1024)),
        (ids, np.full((2, 1), -1)),
        (np.zeros((2, 0), np.int64), np.zeros((2, 0), np.int64)),
    ):
        with pytest.raises(ValueError):
            model.run(bad_ids, bad_pos, state)
    with pytest.raises(ValueError):
        model.start(0)
