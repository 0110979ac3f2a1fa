"""The trainer: runs, evaluates, resumes from its checkpoint, and writes a loadable checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from export.igpt_torch import from_transformers  # noqa: E402
from export.train import main as train_main  # noqa: E402
from export.train_data import is_validation, random_crop  # noqa: E402


def _pool(path: Path) -> Path:
    rng = np.random.default_rng(0)
    # Smooth-ish synthetic images: a colour per row band, so there is something to learn.
    base = rng.integers(0, 512, size=(12, 32), dtype=np.uint16)
    train = np.repeat(base, 32, axis=1).astype(np.uint16)
    val = train[:2].copy()
    np.savez(path, train=train, val_whole=val, val_crops=val)
    return path


def _run(monkeypatch, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    train_main()


def test_train_resume_and_export_checkpoint(tmp_path, monkeypatch):
    pool = _pool(tmp_path / "pool.npz")
    out = tmp_path / "run"
    common = ["--preset", "micro", "--pool", str(pool), "--out", str(out), "--batch", "2"]
    common += ["--eval-every", "2", "--log-every", "1", "--threads", "1", "--warmup", "2"]
    _run(monkeypatch, [*common, "--steps", "2"])
    first = json.loads((out / "result.json").read_text())
    assert first["step"] == 2
    _run(monkeypatch, [*common, "--steps", "4"])
    second = json.loads((out / "result.json").read_text())
    assert second["step"] == 4, "a second run must resume from the checkpoint, not restart"
    assert [h["step"] for h in second["history"]] == [2, 4]
    assert np.isfinite(second["val_whole_bpt"]) and second["val_whole_bpt"] < 9.5

    from transformers import ImageGPTForCausalImageModeling

    hf = ImageGPTForCausalImageModeling.from_pretrained(out / "hf").eval()
    lean = from_transformers(hf)
    ids = torch.randint(0, 513, (1, 64))
    with torch.no_grad():
        diff = (hf(ids, use_cache=False).logits - lean(ids)).abs().max().item()
    assert diff < 1e-5
    clusters = json.loads((out / "hf" / "preprocessor_config.json").read_text())["clusters"]
    assert np.asarray(clusters).shape == (512, 3)


def test_validation_split_holds_out_whole_sources():
    assert is_validation("bsds500/val/101085.jpg")
    assert is_validation("wikipedia-photos/045.png")
    assert not is_validation("bsds500/train/100075.jpg")
    assert not is_validation("wikipedia-photos/044.png")


def test_random_crop_stays_inside_the_image():
    from PIL import Image

    image = Image.new("RGB", (200, 90))
    rng = np.random.default_rng(1)
    for _ in range(200):
        crop = random_crop(image, rng)
        assert 1 <= crop.width <= 200 and 1 <= crop.height <= 90
