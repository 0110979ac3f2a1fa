"""chart.png: the pictures worth a glance, drawn from results.json.

Mean bits per token by format; encode and decode tokens/s against batch for each
bundle and thread count (sampled-step estimates; an exact bundle's encode is its
whole-sequence call per image, flat in the batch); ours against the best classical
codec per image, so a mean cannot hide where the model loses; and, when the run has
the size table, bits per token (file) against --size, ours beside brotli.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # the backend must be chosen before this import

OURS = {"ours_alone", "ours_record", "ours_payload", "model_ideal", "table_ideal"}
NOT_CLASSICAL = OURS | {"raw9"}


def _formats_panel(ax: Any, compression: dict[str, Any]) -> None:
    formats = sorted(compression["formats"].items(), key=lambda kv: kv[1]["bits_per_token"])
    names = [f"{k} [{f['packing']}]" if "packing" in f else k for k, f in formats]
    values = [f["bits_per_token"] for _, f in formats]
    colours = ["tab:red" if k in OURS else "tab:gray" for k, _ in formats]
    ax.barh(names, values, color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("bits per token (headers included)")
    ax.set_title(f"Compression, {compression['images']} images")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)


def _speed_panel(ax: Any, speed: dict[str, Any]) -> None:
    for name, steps in speed["sampled"].items():
        by_threads: dict[int, list[tuple[int, float, float]]] = {}
        for e in steps["estimates"]:
            row = (e["batch"], e["encode_tokens_per_s"], e["decode_tokens_per_s"])
            by_threads.setdefault(e["threads"], []).append(row)
        for threads, rows in sorted(by_threads.items()):
            rows.sort()
            batches = [r[0] for r in rows]
            line = ax.plot(batches, [r[1] for r in rows], marker="o", label=f"{name} t{threads}")
            colour = line[0].get_color()
            ax.plot(batches, [r[2] for r in rows], marker="x", linestyle="--", color=colour)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (images coded together)")
    ax.set_ylabel("tokens/s (solid encode, dashed decode)")
    ax.set_title("Speed (sampled steps)")
    ax.legend(fontsize=7)


def _per_image_panel(ax: Any, compression: dict[str, Any]) -> None:
    best, ours = [], []
    for row in compression["per_image"]:
        classical = [v for k, v in row["bits_per_token"].items() if k not in NOT_CLASSICAL]
        if classical:
            best.append(min(classical))
            ours.append(row["bits_per_token"]["ours_alone"])
    ax.scatter(best, ours, s=12)
    if best:
        low = min(min(best), min(ours)) - 0.2
        high = max(max(best), max(ours)) + 0.2
        ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    ax.set_xlabel("best classical codec, bits/token")
    ax.set_ylabel("ours (file), bits/token")
    ax.set_title("Per image (below the line: ours wins)")


def _sizes_panel(ax: Any, sizes: dict[str, Any]) -> None:
    xs = sizes["sizes"]
    rows = [sizes["per_size"][str(x)] for x in xs]
    ax.plot(xs, [r["bits_per_token"] for r in rows], marker="o", color="tab:red", label="ours")
    if all("brotli_bits_per_token" in r for r in rows):
        brotli = [r["brotli_bits_per_token"] for r in rows]
        ax.plot(xs, brotli, marker="s", color="tab:gray", label="brotli -q 11")
    ax.set_xticks(xs)
    ax.set_xlabel("--size N (N x N tokens)")
    ax.set_ylabel("bits per token (one image per file)")
    m = sizes["monotone"]
    ax.set_title(f"Sizes, {sizes['images']} images ({m['violations']} monotonicity violations)")
    ax.legend(fontsize=7)


def write_chart(results: dict[str, Any], path: Path) -> None:
    panels = 4 if "sizes" in results else 3
    ratios = [1.3, 1, 1, 1][:panels]
    fig, axes = plt.subplots(
        1, panels, figsize=(5.7 * panels, 5.5), gridspec_kw={"width_ratios": ratios}
    )
    _formats_panel(axes[0], results["compression"])
    _speed_panel(axes[1], results["speed"])
    _per_image_panel(axes[2], results["compression"])
    if panels == 4:
        _sizes_panel(axes[3], results["sizes"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
