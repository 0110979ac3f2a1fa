"""The trainer: the committed checkpoint resumes and learns; runs resume; held-out splits hold."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from igpt_codec.export.igpt_torch import IGPT, IGPTShape  # noqa: E402
from igpt_codec.export.train import (  # noqa: E402
    CHECKPOINT_FILE,
    Batches,
    evaluate,
    load_checkpoint,
    lr_at,
    restore,
    train_step,
)
from igpt_codec.export.train import main as train_main  # noqa: E402
from igpt_codec.export.train_data import (  # noqa: E402
    HELDOUT_PATH,
    colourfulness_m3,
    is_validation,
    native_crops,
    random_crop,
    token_shares,
    view_side_probs,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "bsds500_val_101085.jpg"


def _fixed_batch(side: int) -> torch.Tensor:
    """The sample photo (held out from training) and its mirror image, tokenized at `side`."""
    from PIL import Image

    from igpt_codec.core.palette import image_to_tokens

    palette = np.load(ROOT / "export" / "data" / "imagegpt_clusters.npy")
    with Image.open(SAMPLE) as im:
        image = im.convert("RGB")
    views = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return torch.as_tensor(
        np.stack([image_to_tokens(v, palette, side) for v in views]).astype(np.int64)
    )


def test_committed_checkpoint_resumes_and_lowers_training_loss():
    assert CHECKPOINT_FILE.exists(), "the resumable checkpoint must be committed"
    size = CHECKPOINT_FILE.stat().st_size
    assert size <= 15 * 2**20, f"checkpoint is {size} bytes, over 15 MB"
    torch.set_num_threads(1)
    state = load_checkpoint(CHECKPOINT_FILE)
    for key in ("model", "ema", "optimizer", "schedule", "step", "history", "data", "provenance"):
        assert key in state
    assert state["data"]["batches"]["cursor"], "the data cursor must be saved"
    model, _ema, optimizer = restore(state)
    assert optimizer.state_dict()["state"], "the optimizer state (Adam moments) must be restored"
    batch = _fixed_batch(16)
    before = evaluate(model, batch.numpy())
    lr = lr_at(state["step"], state["schedule"])
    losses = [train_step(model, optimizer, batch, lr) for _ in range(4)]
    after = evaluate(model, batch.numpy())
    assert all(math.isfinite(x) for x in losses)
    assert after < before, f"training loss on a fixed batch did not fall: {before} -> {after}"
    assert losses[-1] < losses[0]


def _pool(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def smooth(n: int, side: int) -> np.ndarray:
        # A colour per row band: something to learn.
        base = rng.integers(0, 512, size=(n, side), dtype=np.uint16)
        return np.repeat(base, side, axis=1).astype(np.uint16)

    spec = {"version": 2, "token_share": {"8": 0.5, "16": 0.5}, "views_per_source": 0, "seed": 0}
    np.savez(
        path,
        spec=np.array(json.dumps(spec)),
        train_8=smooth(40, 8),
        train_16=smooth(12, 16),
        heldout_8=smooth(2, 8),
        heldout_16=smooth(2, 16),
        unlike_16=smooth(2, 16),
    )
    return path


def _run(monkeypatch, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    train_main()


def test_train_resume_publish_and_hf(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pool = _pool(tmp_path / "pool.npz")
    out = tmp_path / "run"
    common = ["--preset", "micro", "--pool", str(pool), "--out", str(out), "--threads", "1"]
    common += ["--eval-every", "2", "--log-every", "1", "--warmup", "2", "--save-every", "1"]
    _run(monkeypatch, [*common, "--max-steps", "3"])
    first = load_checkpoint(out / "checkpoint.pt")
    assert first["step"] == 3
    _run(monkeypatch, [*common, "--max-steps", "5"])
    second = load_checkpoint(out / "checkpoint.pt")
    assert second["step"] == 5, "a second run must resume from the checkpoint, not restart"
    assert [h["step"] for h in second["history"]["train"]] == [1, 2, 3, 4, 5]
    assert [h["step"] for h in second["history"]["eval"]] == [0, 2, 3, 4, 5]
    assert len(second["provenance"]["sessions"]) == 2
    assert second["tokens_seen"] > first["tokens_seen"]
    assert set(second["history"]["eval"][-1]["ema"]) == {"heldout_8", "heldout_16", "unlike_16"}

    published = tmp_path / "ckpt" / "model.pt"
    _run(monkeypatch, ["publish", "--out", str(out), "--checkpoint-file", str(published)])
    history = json.loads((published.parent / "model_history.json").read_text())
    assert history["step"] == 5 and history["history"]["eval"]

    hf_dir = tmp_path / "hf"
    _run(monkeypatch, ["hf", "--checkpoint-file", str(published), "--hf-dir", str(hf_dir)])
    from transformers import ImageGPTForCausalImageModeling

    from igpt_codec.export.igpt_torch import from_transformers

    hf = ImageGPTForCausalImageModeling.from_pretrained(hf_dir).eval()
    lean = from_transformers(hf)
    ids = torch.randint(0, 513, (1, 64))
    with torch.no_grad():
        diff = (hf(ids, use_cache=False).logits - lean(ids)).abs().max().item()
    assert diff < 1e-5


def test_resumed_batches_continue_the_same_sequence():
    arrays = {8: np.arange(50 * 64).reshape(50, 64), 16: np.arange(7 * 256).reshape(7, 256)}
    shares = {8: 0.5, 16: 0.5}
    a = Batches(arrays, shares, seed=3)
    for _ in range(5):
        a.next()
    b = Batches(arrays, shares, seed=3)
    b.load(a.state())
    for _ in range(20):  # crosses epoch boundaries (reshuffled orders)
        assert np.array_equal(a.next(), b.next())


def test_a_named_stream_with_no_share_leaves_the_sides_draws_alone():
    """Native-scale crops come in as a named stream after the sides, so a run that gives
    them no share draws exactly the batches it drew before they existed."""
    arrays = {8: np.arange(50 * 64).reshape(50, 64), 16: np.arange(7 * 256).reshape(7, 256)}
    shares = {8: 0.5, 16: 0.5}
    plain = Batches(arrays, shares, seed=3)
    crops = np.full((9, 1024), 7)
    named = Batches({**arrays, "native_32": crops}, {**shares, "native_32": 0.0}, seed=3)
    for _ in range(30):
        assert np.array_equal(plain.next(), named.next())


def test_named_stream_batches_resume_and_follow_their_share():
    arrays = {8: np.zeros((50, 64), int), "native_32": np.ones((40, 1024), int)}
    a = Batches(arrays, {8: 0.5, "native_32": 0.5}, seed=5)
    kinds = [a.next().shape for _ in range(200)]
    assert {(128, 64), (8, 1024)} == set(kinds)  # a 32x32 stream batches 8 crops
    assert 0.35 < kinds.count((8, 1024)) / 200 < 0.65
    b = Batches(arrays, {8: 0.5, "native_32": 0.5}, seed=5)
    b.load(json.loads(json.dumps(a.state())))  # keys survive a text round trip
    for _ in range(20):
        assert np.array_equal(a.next(), b.next())


def test_native_crops_are_32x32_windows_of_the_photo_at_its_own_scale(tmp_path):
    from PIL import Image

    from igpt_codec.core.palette import pixels_to_tokens

    palette = np.load(ROOT / "export" / "data" / "imagegpt_clusters.npy")
    rgb = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    crops = native_crops((tmp_path, "p.png", 6, 11, palette))
    assert crops.shape == (6, 1024) and crops.dtype == np.uint16
    assert np.array_equal(crops, native_crops((tmp_path, "p.png", 6, 11, palette)))
    tokens = pixels_to_tokens(rgb, palette).reshape(40, 70)
    windows = {
        view[top : top + 32, left : left + 32].tobytes()
        for view in (tokens, tokens[:, ::-1])
        for top in range(9)
        for left in range(39)
    }
    assert all(crop.astype(tokens.dtype).tobytes() in windows for crop in crops)
    Image.fromarray(rgb[:31]).save(tmp_path / "small.png")
    assert native_crops((tmp_path, "small.png", 3, 11, palette)).shape == (0, 1024)


def test_position_ids_default_is_raster_and_grid_differs():
    model = IGPT(IGPTShape(n_embd=32, n_layer=1, n_head=2)).eval()
    ids = torch.randint(0, 513, (2, 64))
    with torch.no_grad():
        plain = model(ids)
        raster = model(ids, torch.arange(64))
        grid = model(ids, torch.as_tensor(np.divmod(np.arange(64), 8)[0] * 32 + np.arange(64) % 8))
    assert torch.equal(plain, raster)
    assert not torch.allclose(plain, grid)


def test_schedule_warmup_stable_decay():
    schedule = {"peak": 1e-3, "warmup": 10, "total_steps": 100, "decay_steps": 20, "floor": 0.1}
    assert lr_at(0, schedule) == pytest.approx(1e-4)
    assert lr_at(50, schedule) == pytest.approx(1e-3)
    assert lr_at(80, schedule) == pytest.approx(1e-3)
    assert lr_at(100, schedule) == pytest.approx(1e-4)
    assert lr_at(90, schedule) < 1e-3


def test_rewarm_ramps_up_to_the_schedule_then_follows_it():
    schedule = {"peak": 1e-3, "warmup": 10, "total_steps": 200, "decay_steps": 100, "floor": 0.1}
    rewarmed = {**schedule, "rewarm": {"start": 120, "steps": 10}}
    assert lr_at(120, rewarmed) == pytest.approx(lr_at(120, schedule) / 10)
    assert lr_at(124, rewarmed) == pytest.approx(lr_at(124, schedule) / 2)
    assert lr_at(129, rewarmed) == pytest.approx(lr_at(129, schedule))
    assert [lr_at(s, rewarmed) for s in (119, 130, 180)] == [
        lr_at(s, schedule) for s in (119, 130, 180)
    ]


def test_side_mix_gives_the_stated_token_shares():
    shares, probs = token_shares(), view_side_probs()
    assert set(shares) == set(range(8, 33))
    assert shares[32] == pytest.approx(0.40)
    tokens = {s: probs[s] * s * s for s in probs}
    total = sum(tokens.values())
    for side in shares:
        assert tokens[side] / total == pytest.approx(shares[side])


def test_heldout_splits_are_whole_sources_and_fixed():
    heldout = json.loads(HELDOUT_PATH.read_text())
    assert len(heldout["standard"]) == 105
    assert all(is_validation(s) for s in heldout["standard"])
    assert not set(heldout["standard"]) & set(heldout["unlike"])
    assert set(heldout["unlike_never_trained"]) <= set(heldout["unlike"])
    threshold = heldout["definition"]["m3_threshold"]
    assert all(heldout["m3"][s] >= threshold for s in heldout["unlike"])
    train_m3 = [v for s, v in heldout["m3"].items() if s not in set(heldout["unlike"])]
    assert max(train_m3) <= threshold
    assert len(heldout["unlike"]) == math.ceil(0.1 * len(heldout["m3"]))


def test_colourfulness_measure():
    grey = np.full((8, 8, 3), 128, dtype=np.uint8)
    assert colourfulness_m3(grey) == 0.0
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert colourfulness_m3(red) == pytest.approx(0.3 * math.hypot(255, 127.5))


def test_validation_split_holds_out_whole_sources():
    assert is_validation("bsds500/val/101085.jpg")
    assert is_validation("wikipedia-photos/045.png")
    assert not is_validation("bsds500/train/100075.jpg")
    assert not is_validation("wikipedia-photos/044.png")


def test_random_crop_stays_inside_the_image():
    from PIL import Image

    image = Image.new("RGB", (200, 90))
    rng = np.random.default_rng(1)
    for kind in ("whole", "near", "crop"):
        for _ in range(100):
            crop = random_crop(image, rng, kind)
            assert 1 <= crop.width <= 200 and 1 <= crop.height <= 90


def test_warm_start_rebuilds_the_shipped_model():
    pytest.importorskip("onnx")
    from igpt_codec.export.train import model_from_onnx

    onnx_path = ROOT / "tests" / "data" / "default-float" / "model.onnx"
    manifest = json.loads((onnx_path.parent / "manifest.json").read_text())
    if manifest.get("graph_contract") != "kv-prealloc-chunk64-v1":
        pytest.skip("the float parent bundle has another graph contract")
    _, provenance = model_from_onnx(onnx_path)
    assert provenance["max_abs_logit_diff_vs_onnxruntime"] < 1e-4
