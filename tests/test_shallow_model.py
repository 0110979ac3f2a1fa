"""studies/shallow_model.py: a checkpoint with its last blocks dropped must keep every other
weight as it was, load into the shallower model, and resume with a schedule that starts at
the checkpoint's step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from igpt_codec.export.igpt_torch import IGPT, IGPTShape  # noqa: E402
from igpt_codec.export.train import make_optimizer  # noqa: E402
from studies.shallow_model import derive  # noqa: E402


def _checkpoint(layers: int) -> dict:
    torch.manual_seed(0)
    shape = IGPTShape(n_embd=16, n_layer=layers, n_head=2, n_positions=64, vocab_size=513)
    model = IGPT(shape)
    return {
        "shape": dict(shape.__dict__),
        "model": model.state_dict(),
        "ema": {k: v + 1 for k, v in model.state_dict().items()},  # told apart from "model"
        "optimizer": make_optimizer(model, 1e-3, 0.01).state_dict(),
        "weight_decay": 0.01,
        "schedule": {"kind": "warmup-stable-decay", "peak": 1e-3, "warmup": 10,
                     "total_steps": 100, "decay_steps": 10, "floor": 0.1},
        "step": 100,
        "provenance": {},
    }  # fmt: skip


def test_dropping_the_last_block_keeps_the_rest_of_the_ema_weights() -> None:
    ckpt = _checkpoint(3)
    out = derive(ckpt, layers=2, steps=40, rewarm=5)
    assert out["shape"]["n_layer"] == 2
    assert not [k for k in out["ema"] if ".h.2." in k]
    for key, value in out["ema"].items():
        assert torch.equal(value, ckpt["ema"][key]), key
        assert torch.equal(out["model"][key], ckpt["ema"][key]), key  # trained from the EMA
    IGPT(IGPTShape(**out["shape"])).load_state_dict(out["model"])
    assert out["schedule"]["total_steps"] == 140 and out["schedule"]["rewarm"]["start"] == 100
    assert ckpt["shape"]["n_layer"] == 3  # the source is left as it was


@pytest.mark.parametrize("layers", [0, 3])
def test_a_layer_count_that_drops_nothing_or_everything_is_refused(layers: int) -> None:
    with pytest.raises(SystemExit, match="--layers"):
        derive(_checkpoint(3), layers=layers, steps=10, rewarm=1)
