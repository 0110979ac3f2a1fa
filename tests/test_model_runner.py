"""TokenModel (float32 profile): matches PyTorch, and is reproducible on this machine.

The exact profile's runner is tested in tests/test_exact_model.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import igpt_codec.runtime.session as session_mod
from igpt_codec.runtime.bundle import load_bundle
from igpt_codec.runtime.contract import KV_CHUNK, SOS, cache_capacity
from igpt_codec.runtime.float_runner import TokenModel
from igpt_codec.runtime.session import make_session_options


def run_steps(model: TokenModel, sequences: np.ndarray) -> np.ndarray:
    """probs [B, T, 512] where [:, t] is the distribution after feeding sequences[:, t]."""
    state = model.start(sequences.shape[0])
    out = []
    for t in range(sequences.shape[1]):
        probs, state = model.step(sequences[:, t], state)
        assert probs.dtype == np.float32 and probs.flags.c_contiguous
        assert probs.shape == (sequences.shape[0], 512)
        out.append(probs)
    return np.stack(out, axis=1)


def test_probs_match_torch_softmax(
    float_bundle: Path, tiny_checkpoint_dir: Path, photo_sequences: np.ndarray
) -> None:
    torch = pytest.importorskip("torch")
    from transformers import ImageGPTForCausalImageModeling

    hf = ImageGPTForCausalImageModeling.from_pretrained(tiny_checkpoint_dir).eval()
    with torch.no_grad():
        logits = hf(input_ids=torch.from_numpy(photo_sequences), use_cache=False).logits
        expected = torch.softmax(logits, dim=-1).numpy()
    got = run_steps(TokenModel(load_bundle(float_bundle), threads=1), photo_sequences)
    assert np.abs(got - expected).max() <= 1e-5
    assert expected.max() > 0.5  # the tiny model is confident somewhere, so this is a real check


def test_thread_count_does_not_change_probs(
    float_bundle: Path, photo_sequences: np.ndarray
) -> None:
    bundle = load_bundle(float_bundle)
    one = run_steps(TokenModel(bundle, threads=1), photo_sequences)
    two = run_steps(TokenModel(bundle, threads=2), photo_sequences)
    assert np.array_equal(one, two)


def test_batch_neighbours_do_not_change_probs(
    float_bundle: Path, photo_sequences: np.ndarray
) -> None:
    model = TokenModel(load_bundle(float_bundle), threads=1)
    batched = run_steps(model, photo_sequences)
    for row in range(photo_sequences.shape[0]):
        alone = run_steps(model, photo_sequences[row : row + 1])
        assert np.array_equal(alone[0], batched[row])


def test_fresh_sessions_reproduce(float_bundle: Path, photo_sequences: np.ndarray) -> None:
    first_model = TokenModel(load_bundle(float_bundle))
    first = run_steps(first_model, photo_sequences[:2])
    session_mod._SESSIONS.clear()  # a new session, not the cached one
    second_model = TokenModel(load_bundle(float_bundle))
    assert second_model.session is not first_model.session
    assert np.array_equal(first, run_steps(second_model, photo_sequences[:2]))


def test_states_are_immutable(float_bundle: Path) -> None:
    """A decoder may step from the same state twice (e.g. after a retry); both must agree."""
    model = TokenModel(load_bundle(float_bundle), threads=1)
    _, state = model.step(np.array([SOS, SOS]), model.start(2))
    a, after_a = model.step(np.array([5, 9]), state)
    b, after_b = model.step(np.array([5, 9]), state)
    assert np.array_equal(a, b) and state.length == 1 and after_a.length == after_b.length == 2


def test_branches_from_one_state_do_not_interfere(
    float_bundle: Path, photo_sequences: np.ndarray
) -> None:
    """Copy-on-write: a second branch from an old state leaves the first branch's cache intact,
    also when the branch point lies just before a chunk boundary (the cache grows there)."""
    model = TokenModel(load_bundle(float_bundle), threads=1)
    rows = photo_sequences[:2]
    reference = run_steps(model, rows)
    for fork_at in (3, KV_CHUNK, KV_CHUNK + 1):
        state = model.start(2)
        for t in range(fork_at):
            _, state = model.step(rows[:, t], state)
        probs_a, branch_a = model.step(rows[:, fork_at], state)  # the real continuation
        probs_b, branch_b = model.step(rows[::-1, fork_at], state)  # other tokens, same state
        assert np.array_equal(probs_a, reference[:, fork_at])
        assert branch_b.length == branch_a.length == fork_at + 1 and probs_b.shape == (2, 512)
        for t in range(fork_at + 1, fork_at + 4):  # both branches go on, interleaved
            probs_a, branch_a = model.step(rows[:, t], branch_a)
            _, branch_b = model.step(rows[:, t], branch_b)
            assert np.array_equal(probs_a, reference[:, t])
        again, _ = model.step(rows[:, fork_at], state)  # the old state itself is unchanged
        assert np.array_equal(again, reference[:, fork_at])


def test_cache_capacity_depends_on_length_only(float_bundle: Path) -> None:
    assert [cache_capacity(n) for n in (0, 1, 64, 65, 128, 129, 1024)] == [
        64,
        64,
        64,
        128,
        128,
        192,
        1024,
    ]
    model = TokenModel(load_bundle(float_bundle), threads=1)
    for batch in (1, 3):
        state = model.start(batch)
        for t in range(KV_CHUNK + 2):
            assert state.cache.capacity == cache_capacity(state.length) == cache_capacity(t)
            _, state = model.step(np.full(batch, SOS if t == 0 else 7), state)


def test_multi_token_run_matches_steps(float_bundle: Path, photo_sequences: np.ndarray) -> None:
    """The graph also takes seq > 1 tokens at once (last bits may differ from stepping)."""
    model = TokenModel(load_bundle(float_bundle), threads=1)
    rows = photo_sequences[:2, :70]
    stepped = run_steps(model, rows)
    state = model.start(2)
    first, state = model.run(rows[:, :5], state)
    rest, state = model.run(rows[:, 5:], state)
    assert state.length == 70 and state.cache.capacity == cache_capacity(70)
    assert np.abs(np.concatenate([first, rest], axis=1) - stepped).max() <= 1e-5


def test_step_rejects_bad_tokens(float_bundle: Path) -> None:
    model = TokenModel(load_bundle(float_bundle), threads=1)
    state = model.start(2)
    for bad in (np.array([SOS]), np.array([SOS, 513]), np.array([-1, 0]), np.array([0.0, 1.0])):
        with pytest.raises(ValueError):
            model.step(bad, state)
    with pytest.raises(ValueError):
        model.run(np.zeros((2, 0), np.int64), state)
    with pytest.raises(ValueError):
        model.start(0)
    with pytest.raises(ValueError):
        make_session_options(0)


def test_positions_run_out(float_bundle: Path) -> None:
    bundle = load_bundle(float_bundle)
    model = TokenModel(bundle, threads=1)
    state = model.start(1)
    tokens = np.array([SOS])
    for _ in range(bundle.n_positions):
        _, state = model.step(tokens, state)
        tokens = np.array([7])
    with pytest.raises(ValueError, match="positions"):
        model.step(tokens, state)
