"""Test vectors for web/src/match.js: codec/core/match.py's MatchMixer run step by step.

Why: coding 3's tables must be the same integers in the JavaScript decoder as in Python,
on every step, or a coding-3 file decodes to other tokens. The vectors hold only what
JavaScript cannot recompute cheaply (a token image, zlib-compressed) and digests of every
step (inputs, outputs, weights) and of the whole state now and then; web/test/match.test.js
rebuilds the same inputs (the same integer hash for the fake model tables, the same
windows) and compares every digest.

Inputs are realistic where it matters: windows cut from synthetic images (text, line art,
dithered colours, few-colour noise) as the full-resolution coder cuts them (a last window
narrower than the others, padding repeating a row's last token, context rows not coded),
tables from coding 2's mixer (adaptive.py) over fake model tables, or normalized model
tables alone; batches of 1 to 32 windows; the shipped DEFAULT_LEVELS at their own slot
sizes, and other levels with 1 to 6 slot bits so keys collide and slots are taken over
(the last window in batch order wins), counts halve, and weights move.

    .venv/bin/python web/scripts/make_match_vectors.py   # writes web/test/data/match_vectors.json
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.synthetic import dithered, line_art, text_page  # noqa: E402
from igpt_codec.core.adaptive import AdaptiveMixer, normalize, window_neighbours  # noqa: E402
from igpt_codec.core.match import (  # noqa: E402
    DEFAULT_LEVELS,
    LevelSpec,
    MatchMixer,
    window_template,
)
from igpt_codec.core.palette import pixels_to_tokens  # noqa: E402

OUT = ROOT / "web" / "test" / "data" / "match_vectors.json"
MASK = 0xFFFFFFFF


def token_image() -> np.ndarray:
    """[160, 256] uint16 tokens: text (rows 0-63), line art (64-95), dithered (96-127),
    and noise of three colours (128-159), in the shipped default palette."""
    palette = np.load(ROOT / "codec" / "models" / "default" / "palette.npy")
    parts = [text_page(1, 11, ())[:64], line_art(9)[:32], dithered(11)[:32]]
    tokens = [pixels_to_tokens(rgb, palette).reshape(len(rgb), 256) for rgb in parts]
    rng = np.random.default_rng(28)
    tokens.append(np.array([17, 300, 511], np.uint16)[rng.integers(0, 3, (32, 256))])
    return np.concatenate(tokens).astype(np.uint16)


def mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer hash (lowbias32) of uint64 values < 2^32; JS: Math.imul."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def model_table(seed: int, window: int, cell: int, truth: int) -> np.ndarray:
    """A fake model table [512]: noise 1..256, and a peak of 2^16 on the true symbol
    (three times in four) or on a symbol the hash picks."""
    key = (seed * 0x01000193 + window * 0x9E3779B1 + cell * 0x85EBCA6B) & MASK
    h = mix32((key + np.arange(513, dtype=np.uint64)) & MASK)
    table = 1 + (h[:512] & 255).astype(np.int64)
    peak = truth if int(h[512]) & 3 else (int(h[512]) >> 8) & 511
    table[peak] += 1 << 16
    return table


def digest(*arrays: np.ndarray) -> str:
    """The first 8 hex digits of the sha256 of the arrays' bytes, one after the other."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:8]


def state_digest(mixer: MatchMixer) -> str:
    """Every level's tags (int64), counts (uint16), totals and distinct (int64)."""
    parts = []
    for level in mixer._levels:
        parts += [
            level.tags.astype("<i8"),
            level.counts.astype("<u2"),
            level.totals.astype("<i8"),
            level.distinct.astype("<i8"),
        ]
    return digest(*parts)


def spec_json(spec: LevelSpec) -> list:
    return [
        spec.kind,
        spec.size,
        spec.strength_base,
        spec.strength_per_symbol,
        spec.initial_weight,
        spec.symbols,
        spec.slot_bits,
    ]


def run_case(image: np.ndarray, case: dict) -> dict:
    """Run one case; returns it with its per-step digests and what it exercised."""
    levels = tuple(LevelSpec(*spec) for spec in case["levels"])
    mixer = MatchMixer(levels, case["slot_bits"])
    adaptive = AdaptiveMixer() if case["adaptive"] else None
    w, rows, top, known = case["width"], case["rows"], case["top"], case["known"]
    windows = []
    for x0, real in zip(case["x0"], case["real"], strict=True):
        crop = image[top : top + rows, x0 : x0 + real].astype(np.int64)
        pad = np.repeat(crop[:, real - 1 :], w - real, axis=1)
        windows.append(np.concatenate([crop, pad], axis=1).reshape(-1))
    cells = np.stack(windows)
    steps, events = [], {"takeovers": 0, "halvings": 0, "contested": 0, "batches": set()}
    for cell in range(known * w, rows * w):
        live = [b for b, real in enumerate(case["real"]) if cell % w < real]
        if not live:
            continue
        events["batches"].add(len(live))
        truth = cells[live, cell]
        model = np.stack(
            [model_table(case["seed"], b, cell, int(truth[i])) for i, b in enumerate(live)]
        )
        astep = None
        if adaptive is not None:
            table, astep = adaptive.tables(model, window_neighbours(cells[live], cell, w))
        else:
            table = normalize(model)
        template = window_template(cells[live], cell, w, mixer.size)
        out, step = mixer.tables(table, template)
        assert table.max() < 1 << 32 and out.max() < 1 << 32
        before = [(lv.tags.copy(), lv.totals.copy()) for lv in mixer._levels]
        mixer.update(step, truth)
        if astep is not None:
            adaptive.update(astep, truth)
        for (tags, totals), lv, slots, keys in zip(
            before, mixer._levels, step.slots, step.keys, strict=True
        ):
            events["takeovers"] += int(((tags != lv.tags) & (tags >= 0)).sum())
            events["halvings"] += int(((tags == lv.tags) & (lv.totals < totals)).sum())
            for slot in np.unique(slots):
                events["contested"] += len(np.unique(keys[slots == slot])) > 1
        weights = np.concatenate([lv.weights for lv in mixer._levels]).astype("<i8")
        entry = [
            digest(table.astype("<u4")),
            digest(out.astype("<u4")),
            digest(weights),
        ]
        if case["state_every"] and len(steps) % case["state_every"] == 0:
            entry.append(state_digest(mixer))
        steps.append(":".join(entry))
    events["batches"] = sorted(events["batches"])
    return {
        **case,
        "levels": [spec_json(spec) for spec in levels],
        "steps": steps,
        "final_state": state_digest(mixer),
        "events": events,
    }


def cases() -> list[dict]:
    default = [spec_json(spec) for spec in DEFAULT_LEVELS]
    mixed = [
        ["pattern", 1, 2, 1, 4096, False, 16],
        ["values", 1, 1, 0, 0, True, 16],
        ["pattern", 16, 20, 5, 3000, False, 16],
        ["values", 3, 7, 3, 2048, False, 16],
        ["pattern", 5, 1, 0, 100, True, 16],
        ["values", 16, 3, 2, 4096, True, 16],
    ]
    base = {"seed": 1, "slot_bits": None, "adaptive": True, "state_every": 0, "levels": default}
    return [
        # The shipped levels on a first band of text: 8 windows of 32 x 32.
        {
            **base,
            "name": "text_default_b8",
            "width": 32,
            "rows": 32,
            "top": 0,
            "known": 0,
            "x0": list(range(0, 256, 32)),
            "real": [32] * 8,
            "state_every": 128,
        },
        # A later band (5 context rows) whose last window is 13 wide (padding), batch 8 -> 7.
        {
            **base,
            "name": "text_band_partial",
            "seed": 2,
            "width": 32,
            "rows": 32,
            "top": 27,
            "known": 5,
            "x0": [*range(0, 224, 32), 224],
            "real": [32] * 7 + [13],
            "state_every": 128,
        },
        # One window at a time, over line art then dithered colours.
        {
            **base,
            "name": "art_dither_b1",
            "seed": 3,
            "width": 32,
            "rows": 64,
            "top": 64,
            "known": 0,
            "x0": [96],
            "real": [32],
            "state_every": 256,
        },
        # The shipped levels squeezed into 2^5 slots: their real keys collide, batch 16.
        {
            **base,
            "name": "text_b16_bits5",
            "seed": 4,
            "slot_bits": 5,
            "width": 16,
            "rows": 24,
            "top": 8,
            "known": 2,
            "x0": list(range(0, 256, 16)),
            "real": [16] * 16,
            "state_every": 1,
        },
        # 32 windows, some the same crop (same keys), 2 slots a level: takeovers, halving.
        {
            **base,
            "name": "mixed_b32_bits1",
            "seed": 5,
            "slot_bits": 1,
            "levels": mixed,
            "width": 8,
            "rows": 16,
            "top": 40,
            "known": 2,
            "x0": [*range(0, 192, 8), 0, 8, 8, 16, 40, 40, 100, 0],
            "real": [8] * 31 + [3],
            "state_every": 1,
        },
        # Normalized model tables without coding 2, noise of three colours, batches 5 -> 1.
        {
            **base,
            "name": "noise_b5_bits3",
            "seed": 6,
            "slot_bits": 3,
            "levels": mixed[2:5],
            "adaptive": False,
            "width": 24,
            "rows": 20,
            "top": 130,
            "known": 3,
            "x0": [0, 24, 48, 72, 200],
            "real": [24, 24, 7, 24, 1],
            "state_every": 1,
        },
        # The shipped levels, 3 windows, no coding 2, a band of dithered colours at 6 bits.
        {
            **base,
            "name": "dither_b3_bits6",
            "seed": 7,
            "slot_bits": 6,
            "adaptive": False,
            "width": 32,
            "rows": 16,
            "top": 100,
            "known": 4,
            "x0": [0, 32, 64],
            "real": [32] * 3,
            "state_every": 1,
        },
    ]


def main() -> int:
    image = token_image()
    out = {
        "about": "web/scripts/make_match_vectors.py: codec/core/match.py step by step",
        "image": {
            "height": image.shape[0],
            "width": image.shape[1],
            "zlib_u16le": base64.b64encode(zlib.compress(image.astype("<u2").tobytes(), 9)).decode(
                "ascii"
            ),
        },
        "cases": [run_case(image, case) for case in cases()],
    }
    for case in out["cases"]:
        print(case["name"], len(case["steps"]), "steps", case["events"])
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(OUT, OUT.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
