"""Test vectors for web/src/linear.js: codec/core/linear.py's arithmetic and LinearMixer.

Why: with the kind-3 LINEAR feature (format/SPEC.md, "Linear levels") coding 2's levels make
a cell's table as one linear combination with per-cell integer coefficients whose products
reach 2^62, past what a JS number holds exactly; the JS decoder must give the same integers
as Python on every cell, or a LINEAR file decodes to other tokens. Three parts:

- `coefficients`: linear.coefficients() on edge cases (weights 0 and 4096, empty contexts,
  the largest totals and strengths a context can have, model totals 512 and near 2^32), on
  random inputs, and on inputs where a plain float64 product of two coefficients floors
  wrong; rows of [F, n_0..2, D_0..2, w_0..2, a_f, a_0, a_1, a_2];
- `tables`: whole tables from linear.reference_table() (Python integers), checked here
  against the float64 matrix product LinearMixer uses; model tables and counts in full
  (counts sparse), the expected table in full;
- `cases`: LinearMixer run step by step over windows cut from a token image as the
  full-resolution coder cuts them (make_match_vectors.py's image and fake model tables,
  scaled up to totals near 2^32 in one case, their peaks to 2^31 in another so that q_0
  floors to 0 before its max, a small capacity in another so levels forget),
  with digests of every step's output tables and weights and of the whole state now and
  then; web/test/linear.test.js rebuilds the same inputs and compares every digest.

    .venv/bin/python web/scripts/make_linear_vectors.py   # writes web/test/data/linear_vectors.json

Deterministic: the same file for the same linear.py and adaptive.py arithmetic.
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from make_match_vectors import digest, model_table, token_image  # noqa: E402

from igpt_codec.core.adaptive import window_neighbours  # noqa: E402
from igpt_codec.core.linear import LinearMixer, coefficients, reference_table  # noqa: E402

OUT = ROOT / "web" / "test" / "data" / "linear_vectors.json"
PALETTE = 512
MAX_N = 1023 + 255
"""The largest count total a context can hold at a step (1023, then one step's cells)."""
MAX_K = 16 + 4 * PALETTE


def coefficient_rows() -> list[list[int]]:
    """[F, n0, n1, n2, D0, D1, D2, w0, w1, w2] inputs: edges, then random."""
    rows = []
    totals = [512, 513, 2**16 + 7, 2**22, 2**31 - 1, 2**32 - 512, 2**32 - 1]
    levels = [
        (0, 16, 4096),  # an empty context (n 0, k 16), full weight
        (0, 16, 0),
        (1, 20, 4096),
        (1, 20, 0),
        (1023, 1023 + 16 + 4 * 3, 4096),  # one symbol, the most counts: the counts alone
        (MAX_N, MAX_N + 16 + 4 * 500, 4096),
        (MAX_N, MAX_N + 16, 4096),  # impossible d = 0 with counts: the largest beta
        (MAX_N, MAX_N + MAX_K, 1),
        (700, 700 + 16 + 4 * 37, 2048),
        (5, 5 + 36, 4095),
    ]
    for i, total in enumerate(totals):
        for j, a in enumerate(levels):
            b = levels[(j + i + 3) % len(levels)]
            c = levels[(2 * j + i + 1) % len(levels)]
            rows.append([total, a[0], b[0], c[0], a[1], b[1], c[1], a[2], b[2], c[2]])
    for level in levels:  # the same level thrice, at both ends of the totals
        for total in (512, 2**32 - 1):
            rows.append([total, *[level[0]] * 3, *[level[1]] * 3, *[level[2]] * 3])
    rng = np.random.default_rng(61)
    for _ in range(400):
        total = int(rng.integers(512, 2**32))
        n = rng.integers(0, MAX_N + 1, 3)
        d = np.minimum(n, rng.integers(0, PALETTE + 1, 3))
        d[n > 0] = np.maximum(d[n > 0], 1)
        w = rng.integers(0, 4097, 3)
        w[rng.random(3) < 0.2] = 4096
        w[rng.random(3) < 0.1] = 0
        rows.append([total, *n.tolist(), *(n + 16 + 4 * d).tolist(), *w.tolist()])
    rows += rounding_rows(rng)
    out = []
    for row in rows:
        a = np.array(row, np.int64)
        coeffs = coefficients(a[:1], a[1:4, None], a[4:7, None], a[7:10, None])[0]
        out.append(row + [int(v) for v in coeffs])
    return out


def rounding_rows(rng: np.random.Generator, want: int = 24) -> list[list[int]]:
    """Random inputs where a plain float64 product would floor a_1 = (alpha_2 beta_1) >> 22
    or a_0 = (a_12 beta_0) >> 22 wrong (the product, past 2^53, rounds up to a multiple of
    2^22): the ones a JS port must compute with care. About 1 in 10^4 random inputs."""
    found: list[list[int]] = []
    while len(found) < want:
        size = 1 << 20
        total = rng.integers(512, 2**32, size)
        n = rng.integers(0, MAX_N + 1, (3, size))
        d = np.minimum(n, rng.integers(1, PALETTE + 1, (3, size)))
        spread = n + 16 + 4 * d
        w = rng.integers(0, 4097, (3, size))
        unit = 4096 * spread
        alpha = ((unit - w * n) << 22) // unit
        beta = (w << 32) // spread
        a12 = (alpha[2] * alpha[1]) >> 22
        bad = np.zeros(size, bool)
        for x, y in ((alpha[2], beta[1]), (a12, beta[0])):
            plain = np.floor(x.astype(np.float64) * y.astype(np.float64) / 2**22)
            bad |= plain != ((x * y) >> 22).astype(np.float64)
        for i in np.flatnonzero(bad)[: want - len(found)].tolist():
            found.append(
                [int(total[i]), *n[:, i].tolist(), *spread[:, i].tolist(), *w[:, i].tolist()]
            )
    return found


def table_rows() -> list[dict]:
    """Whole tables: model tables of every scale, counts empty, sparse or full."""
    rng = np.random.default_rng(62)
    specs = [
        # (model table kind, counts kind per level, weights)
        ("flat", ("empty", "empty", "empty"), (4096, 4096, 4096)),
        ("peak", ("sparse", "empty", "empty"), (4096, 4096, 4096)),
        ("peak", ("sparse", "sparse", "sparse"), (0, 0, 0)),
        ("peak", ("sparse", "sparse", "sparse"), (4096, 0, 2048)),
        ("huge", ("dense", "sparse", "one"), (4096, 4096, 4096)),
        ("huge", ("one", "one", "one"), (0, 4096, 1)),
        ("ones", ("dense", "dense", "dense"), (4096, 3000, 17)),
        ("random", ("sparse", "dense", "empty"), (1234, 4096, 4095)),
    ]
    out = []
    for model, kinds, weights in specs:
        if model == "flat":
            f = np.full(PALETTE, 7, np.int64)
        elif model == "ones":
            f = np.ones(PALETTE, np.int64)
        elif model == "peak":
            f = rng.integers(1, 257, PALETTE)
            f[rng.integers(PALETTE)] += 1 << 16
        elif model == "huge":  # total just below 2^32
            f = rng.integers(1, 1 << 20, PALETTE)
            f[rng.integers(PALETTE)] += 1 << 30
            f[0] += 2**32 - 1 - int(f.sum())
        else:
            f = rng.integers(1, 1 << 24, PALETTE)
        counts = np.zeros((3, PALETTE), np.int64)
        for level, kind in enumerate(kinds):
            if kind == "sparse":
                where = rng.choice(PALETTE, int(rng.integers(1, 12)), replace=False)
                counts[level, where] = rng.integers(1, 90, len(where))
            elif kind == "dense":  # every symbol seen: d = 512
                counts[level] = rng.integers(1, 3, PALETTE)
            elif kind == "one":  # one symbol, 1023 times
                counts[level, int(rng.integers(PALETTE))] = 1023
        seen = counts.sum(axis=1)
        spread = seen + 16 + 4 * (counts > 0).sum(axis=1)
        w = np.array(weights, np.int64)
        want = reference_table(f[None], counts[:, None], seen[:, None], spread[:, None], w[:, None])
        coeffs = coefficients(f[None].sum(axis=1), seen[:, None], spread[:, None], w[:, None])
        vectors = np.concatenate([f[None], counts]).astype(np.float64)
        product = np.floor((coeffs.astype(np.float64) @ vectors) * 2.0**-22)
        assert np.array_equal(np.maximum(product, 1)[0].astype(np.int64), want[0])
        out.append(
            {
                "f": f.tolist(),
                "counts": [{str(s): int(c[s]) for s in np.flatnonzero(c).tolist()} for c in counts],
                "w": list(weights),
                "coefficients": coeffs[0].tolist(),
                "table": want[0],
            }
        )
    return out


def state_digest(mixer: LinearMixer) -> str:
    """Per level, its contexts in key order: key, total, distinct (int64) and counts (uint16).
    Level 0's key is its row (the model's guess); a context is held once it is counted."""
    parts = []
    for n, level in enumerate(mixer._levels):
        if n == 0:
            held = [(row, row) for row in np.flatnonzero(level.totals).tolist()]
        else:
            held = sorted(level.slots.items())
        for key, row in held:
            parts.append(np.array([key, level.totals[row], level.distinct[row]], "<i8"))
            parts.append(level.counts[row].astype("<u2"))
    return digest(*parts)


def run_case(image: np.ndarray, case: dict) -> dict:
    """Run LinearMixer over one case's windows; returns the case with its step digests."""
    mixer = LinearMixer(case["capacity"])
    w, rows, top, known = case["width"], case["rows"], case["top"], case["known"]
    windows = []
    for x0, real in zip(case["x0"], case["real"], strict=True):
        crop = image[top : top + rows, x0 : x0 + real].astype(np.int64)
        pad = np.repeat(crop[:, real - 1 :], w - real, axis=1)
        windows.append(np.concatenate([crop, pad], axis=1).reshape(-1))
    cells = np.stack(windows)
    steps = []
    events = {"clears": 0, "halvings": 0, "weight_min": 4096, "max_total": 0, "batches": set()}
    for cell in range(known * w, rows * w):
        live = [b for b, real in enumerate(case["real"]) if cell % w < real]
        if not live:
            continue
        events["batches"].add(len(live))
        truth = cells[live, cell]
        model = np.stack(
            [model_table(case["seed"], b, cell, int(truth[i])) for i, b in enumerate(live)]
        )
        model *= case["scale"]
        if case["sharpen"]:  # peaks of about 2^31: the other symbols' q_0 floors to 0 (then 1)
            model[model >= 1 << 16] <<= 15
        events["max_total"] = max(events["max_total"], int(model.sum(axis=1).max()))
        assert model.sum(axis=1).max() < 1 << 32
        held = [len(level.slots) for level in mixer._levels[1:]]
        out, step = mixer.tables(model, window_neighbours(cells[live], cell, w))
        events["clears"] += sum(
            len(level.slots) < before for level, before in zip(mixer._levels[1:], held, strict=True)
        )
        before = mixer._totals[step.rows].copy()
        mixer.update(step, truth)
        events["halvings"] += int((mixer._totals[step.rows] < before).sum())
        events["weight_min"] = min(events["weight_min"], int(mixer._weights.min()))
        assert out.min() >= 1 and out.sum(axis=1).max() <= 2**22 + 512
        entry = [digest(out.astype("<u4")), digest(mixer._weights.astype("<i8"))]
        if case["state_every"] and len(steps) % case["state_every"] == 0:
            entry.append(state_digest(mixer))
        steps.append(":".join(entry))
    events["batches"] = sorted(events["batches"])
    return {**case, "steps": steps, "final_state": state_digest(mixer), "events": events}


def cases() -> list[dict]:
    base = {"seed": 11, "scale": 1, "sharpen": False, "capacity": 16384, "state_every": 0}
    return [
        # A first band of text: 8 windows of 32 x 32.
        {
            **base,
            "name": "text_b8",
            "width": 32,
            "rows": 32,
            "top": 0,
            "known": 0,
            "x0": list(range(0, 256, 32)),
            "real": [32] * 8,
            "state_every": 64,
        },
        # A later band (5 context rows), its last window 13 wide (padding), model tables
        # scaled to totals just below 2^32.
        {
            **base,
            "name": "text_band_partial_huge",
            "seed": 12,
            "scale": 21845,
            "width": 32,
            "rows": 32,
            "top": 27,
            "known": 5,
            "x0": [*range(0, 224, 32), 224],
            "real": [32] * 7 + [13],
            "state_every": 64,
        },
        # Peaks of about 2^31 in the model's tables: a symbol off the peak has q_0 below 1.
        {
            **base,
            "name": "text_sharp_b4",
            "seed": 16,
            "sharpen": True,
            "width": 32,
            "rows": 32,
            "top": 32,
            "known": 0,
            "x0": [0, 64, 128, 192],
            "real": [32] * 4,
            "state_every": 64,
        },
        # One window at a time over line art and dithered colours: counts halve.
        {
            **base,
            "name": "art_dither_b1",
            "seed": 13,
            "width": 32,
            "rows": 64,
            "top": 64,
            "known": 0,
            "x0": [96],
            "real": [32],
            "state_every": 256,
        },
        # 16 windows, room for 40 contexts a level: the neighbour levels forget again and again.
        {
            **base,
            "name": "dither_b16_capacity40",
            "seed": 14,
            "capacity": 40,
            "width": 16,
            "rows": 24,
            "top": 96,
            "known": 2,
            "x0": list(range(0, 256, 16)),
            "real": [16] * 16,
            "state_every": 1,
        },
        # Noise of three colours, some windows the same crop (shared contexts in a step).
        {
            **base,
            "name": "noise_b6_shared",
            "seed": 15,
            "width": 24,
            "rows": 20,
            "top": 130,
            "known": 3,
            "x0": [0, 24, 0, 72, 24, 200],
            "real": [24, 24, 24, 7, 24, 1],
            "state_every": 1,
        },
    ]


def main() -> int:
    image = token_image()
    out = {
        "about": "web/scripts/make_linear_vectors.py: codec/core/linear.py on fixed inputs",
        "coefficients": coefficient_rows(),
        "tables": table_rows(),
        "image": {
            "height": image.shape[0],
            "width": image.shape[1],
            "zlib_u16le": base64.b64encode(zlib.compress(image.astype("<u2").tobytes(), 9)).decode(
                "ascii"
            ),
        },
        "cases": [run_case(image, case) for case in cases()],
    }
    print(len(out["coefficients"]), "coefficient rows,", len(out["tables"]), "tables")
    for case in out["cases"]:
        print(case["name"], len(case["steps"]), "steps", case["events"])
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(OUT, OUT.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
