"""Do a span graph's tables hold across onnxruntime releases and CPUs? (issue 23)

Two modes. `make DIR` (needs torch, this checkout) exports the tiny test model with an
attention span of 64 into DIR/bundle and writes DIR/data.npz (SOS + two check photos).
`run DIR [T]` needs only numpy and onnxruntime, so it runs under any interpreter the
portability harness uses: it computes the first T positions' tables in one whole-window
call and again step by step through a ring of 64 slots that it manages itself (slot p mod
64), and prints the onnxruntime release, whether the two are equal, and a hash of the tables.
Equal hashes across interpreters = the same integers there.

    python -m studies.attention_span_portability make /tmp/spanport
    .venv-ort120/bin/python studies/attention_span_portability.py run /tmp/spanport
    qemu-x86_64 -cpu Nehalem .venv/bin/python studies/attention_span_portability.py \\
        run /tmp/spanport
    ../shared/tools/aarch64/run-arm64.sh studies studies/attention_span_portability.py \\
        run /tmp/spanport 200

Status: a check for issue 23, results in docs/speed.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

SPAN = 64


def make(root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import TINY_LM_HEAD_SCALE, TINY_SEED, TINY_SHAPE

    from igpt_codec.export.exact_export import load_calibration
    from igpt_codec.export.make_random_checkpoint import write_random_checkpoint
    from igpt_codec.export.onnx_export import export_bundle
    from igpt_codec.runtime.positions import GRID, positions

    ckpt = write_random_checkpoint(
        root / "ckpt", **TINY_SHAPE, seed=TINY_SEED, lm_head_scale=TINY_LM_HEAD_SCALE
    )
    export_bundle(
        str(ckpt), root / "bundle", calibration_images=16, attention_span=SPAN, force=True
    )
    tokens = load_calibration()[1][:2]
    ids = np.concatenate([np.full((2, 1), 512), tokens[:, :-1]], 1).astype(np.int64)
    pos = np.broadcast_to(positions(32, GRID), ids.shape).astype(np.int64)
    np.savez(root / "data.npz", ids=ids, pos=pos)


def run(root: Path, steps: int) -> None:
    import onnxruntime as ort

    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    model = manifest["model"]
    n_layer, heads, head_dim, span = (
        model[k] for k in ("n_layer", "n_head", "head_dim", "attention_span")
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(
        str(root / "bundle" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    with np.load(root / "data.npz") as data:
        ids, pos = data["ids"][:, :steps].copy(), data["pos"][:, :steps].copy()
    batch = len(ids)
    names = [f"past.{i}.{k}" for i in range(n_layer) for k in ("key", "value")]

    def ring() -> dict[str, np.ndarray]:
        return {
            n: np.zeros(
                (batch, heads, head_dim, span)
                if n.endswith("key")
                else (batch, heads, span, head_dim),
                np.float32,
            )
            for n in names
        }

    whole = session.run(
        ["freqs"],
        {"input_ids": ids, "position_ids": pos, "past_length": np.array(0, np.int64)} | ring(),
    )[0]
    cache, tables = ring(), []
    outputs = ["freqs", *[n.replace("past.", "new.") for n in names]]
    for t in range(ids.shape[1]):
        feeds = {
            "input_ids": ids[:, t : t + 1],
            "position_ids": pos[:, t : t + 1],
            "past_length": np.array(t, np.int64),
        }
        out = session.run(outputs, feeds | cache)
        tables.append(out[0][:, 0])
        for i in range(n_layer):
            cache[f"past.{i}.key"][..., t % span] = out[1 + 2 * i][..., 0]
            cache[f"past.{i}.value"][:, :, t % span] = out[2 + 2 * i][:, :, 0]
    stepped = np.stack(tables, 1)
    digest = hashlib.sha256(whole.astype(np.int32).tobytes()).hexdigest()[:16]
    print(
        f"onnxruntime {ort.__version__} T={steps}: whole == ring steps: "
        f"{np.array_equal(whole, stepped)}, tables sha256 {digest}"
    )


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("make", "run"):
        sys.exit("usage: attention_span_portability.py make|run DIR [T]")
    target = Path(sys.argv[2])
    if sys.argv[1] == "make":
        make(target)
    else:
        run(target, int(sys.argv[3]) if len(sys.argv) > 3 else 1024)
