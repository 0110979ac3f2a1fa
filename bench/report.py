"""results.json -> results.md: the same numbers as Markdown tables, for people.

Only formatting lives here; every figure is computed by the sections and read
back from the results dictionary, so the JSON and the tables cannot disagree.

Why ~640 lines: one markdown template per benchmark section, kept together so the
report's sections read in the same order and style; no logic beyond formatting lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PER_IMAGE_FORMATS = (
    "ours_alone",
    "ours_record",
    "model_ideal",
    "table_ideal",
    "png_rgb",
    "png_indexed",
    "png_tokens16",
    "webp_ll",
    "jxl_ll",
    "brotli",
    "zstd",
    "lzma",
)
CLI_LABELS = {
    "imports": "python -c 'import cli, igpt_codec.api, igpt_codec.runtime' (baseline)",
    "compress": "cli.py compress",
    "decompress": "cli.py decompress",
}
CONSTRICTION_MODES = {
    "prebuilt": "per symbol, models prebuilt",
    "per_symbol": "per symbol, model built per symbol",
    "vectorized": "one call per block of symbols",
}
SHORT = {
    "ours_alone": "ours (file)",
    "ours_record": "ours (in stream)",
    "ours_payload": "ours payload",
    "model_ideal": "ideal",
    "table_ideal": "table ideal",
    "png_rgb": "PNG",
    "png_indexed": "PNG idx",
    "png_tokens16": "PNG tok16",
    "webp_ll": "WebP-LL",
    "jxl_ll": "JXL-LL",
    "brotli": "brotli",
    "zstd": "zstd",
    "lzma": "lzma",
    "raw9": "raw",
}


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _mib(value: float) -> str:
    return f"{value / (1 << 20):,.0f} MiB"


def header_section(r: dict[str, Any]) -> str:
    m, model, images = r["machine"], r["model"], r["images"]
    v = m["versions"]
    lines = [
        "# Benchmark results",
        "",
        f"- Created {r['created']}; total run time {r['timings_s']['total']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in r['timings_s'].items() if k != 'total')}).",
        f"- Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
        f"({m['physical_cores']} physical), {_mib(m['memory_bytes'] or 0)}; "
        f"flags {', '.join(m['cpu_flags']) or 'none of interest'}; "
        f"load average {m['load_average_start']} at start, {m['load_average_end']} at end.",
        f"- Python {v['python']}, numpy {v['numpy_runtime']}, "
        f"onnxruntime {v['onnxruntime_runtime']}, Pillow {v['pillow']}, "
        f"constriction {v['constriction']}.",
        f"- Model: `{model['path']}` (fingerprint {model['fingerprint']}, "
        f"{model['n_layer']} layers x {model['n_embd']} wide, {model['n_head']} heads, "
        f"profile {model['profile']}, positions {model['position_layout']}).",
        f"- Images: {images['count']} from {images['source']}, coded at "
        f"{images['size']}x{images['size']} ({images['tokens_per_image']} tokens each).",
        f"- Mode: {'quick' if r['config']['quick'] else 'full'}.",
    ]
    return "\n".join(lines) + "\n"


def compression_section(c: dict[str, Any]) -> str:
    formats = c["formats"]
    ours = formats["ours_alone"]["bits_per_token"]
    rows = []
    for _key, f in sorted(formats.items(), key=lambda kv: kv[1]["bits_per_token"]):
        label = f["label"] + (f" [{f['packing']}]" if "packing" in f else "")
        rows.append(
            (label, f["bits_per_token"], f["total_bytes"] / c["images"], f["bits_per_token"] / ours)
        )
    o = c["ours"]
    s = c["shared_stream"]
    out = [
        "## Compression\n",
        f"{c['images']} images, {c['tokens']} tokens. Bits per token include every file header; "
        "general-purpose compressors use the byte layout (in brackets) with the smallest total.\n",
        table(("format", "bits/token", "mean bytes/image", "x ours (file)"), rows),
        (
            "Where our bits go (bits per token). Exact profile: the graph outputs the integer "
            "tables, so the model ideal IS the table ideal and there is no quantization step.\n"
            if c.get("profile") == "exact-int-v1"
            else "Where our bits go (bits per token; quantization can be negative, see docs):\n"
        ),
        table(
            (
                "model ideal",
                "+ quantization",
                "= table ideal",
                "+ coder",
                "= payload",
                "file",
                "in stream",
            ),
            [
                (
                    o["ideal_bits_per_token"],
                    f"{o['quantization_bits_per_token']:+.4f} ({o['quantization_pct']:+.3f}%)",
                    o["table_ideal_bits_per_token"],
                    f"{o['coder_overhead_bits_per_token']:+.4f} ({o['coder_overhead_pct']:+.3f}%)",
                    o["payload_bits_per_token"],
                    f"{o['alone_bits_per_token']:.3f} (+{o['container_bytes_per_image_alone']:.1f}"
                    " B/image)",
                    f"{o['record_bits_per_token']:.3f} "
                    f"(+{o['container_bytes_per_image_in_stream']:.1f} B/image)",
                )
            ],
        ),
        f"Shared stream: {s['images']} images in {s['stream_bytes']} bytes, "
        f"encoder batch {s['encode_batch']}, decoder batch {s['decode_batch']}, "
        f"decoded losslessly: {s['decoded_losslessly']}; "
        f"payloads identical alone vs batched: "
        f"{s['payloads_identical_alone_vs_shared']} of {s['images']}.\n",
    ]
    return "\n".join(out)


def per_image_section(c: dict[str, Any]) -> str:
    keys = [k for k in PER_IMAGE_FORMATS if k in c["formats"]]
    rows = [(r["name"], *(r["bits_per_token"][k] for k in keys)) for r in c["per_image"]]
    rows.append(("**mean**", *(c["formats"][k]["bits_per_token"] for k in keys)))
    return "### Per image (bits per token)\n\n" + table(("image", *(SHORT[k] for k in keys)), rows)


def _estimate_rows(steps: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (
            e["batch"],
            e["threads"],
            e["encode_tokens_per_s"],
            e["decode_tokens_per_s"],
            e["decode_cpu_tokens_per_s"],
            e["model_tokens_per_s"],
            e["encode_seconds_per_batch"] / e["batch"],
            ("whole image" if e["whole_image_estimate"] else f"past {e['past_lengths'][0]} only")
            + (
                "; encode: one call per image"
                if e.get("encode_from", "").startswith("whole")
                else ""
            ),
        )
        for e in steps["estimates"]
    ]


def speed_section(r: dict[str, Any]) -> str:
    sp = r["speed"]
    e2e = sp["end_to_end"]
    a, s = e2e["alone_encode"], e2e["shared_stream"]
    out = [
        "## Speed\n",
        "Measured whole images through the API (compression section):\n",
        table(
            ("run", "batch", "threads", "encode tokens/s", "decode tokens/s"),
            [
                (
                    f"one image per call (median of {a['images']})",
                    1,
                    a["threads"],
                    a["median_tokens_per_s"],
                    None,
                ),
                (
                    f"all {s['images']} images in one stream",
                    s["batch"],
                    s["threads"],
                    s["encode_tokens_per_s"],
                    s["decode_tokens_per_s"],
                ),
            ],
        ),
    ]
    check = sp.get("estimate_check")
    if check:
        out.append(
            f"Sampled-step estimate at batch 1 / {check['threads']} thread(s): "
            f"{check['estimated_encode_tokens_per_s']:,.0f} tokens/s against "
            f"{check['measured_encode_tokens_per_s']:,.0f} measured "
            f"(x{check['estimate_over_measured']:.2f}; the measured figure also pays for session "
            "creation, tokenizing and the container).\n"
        )
    header = (
        "batch",
        "threads",
        "encode tok/s",
        "decode tok/s",
        "decode tok/s (CPU)",
        "model only tok/s",
        "encode s/image",
        "covers",
    )
    for name, steps in sp["sampled"].items():
        plan = steps["plan"]
        b = steps["bundle"]
        per_batch = ", ".join(f"batch {k}: {v} timed steps" for k, v in plan["steps"].items())
        sessions = ", ".join(
            f"{t} thread(s) {s:.2f} s" for t, s in steps["session_create_seconds"].items()
        )
        out.append(
            f"### Sampled steps: {name} ({b['n_layer']} x {b['n_embd']}, "
            f"profile {b['profile']}, `{b['path']}`)\n\n"
            f"Per cell: {per_batch} after {plan['warmup']} warm-up, at past lengths "
            f"{steps['past_lengths']}; tokens/s integrate the medians over {steps['positions']} "
            f"positions (CPU: this process's own CPU time, without other processes' load). "
            f"Session creation: {sessions}.\n"
        )
        out.append(table(header, _estimate_rows(steps)))
        whole = steps.get("whole_sequence") or {}
        if whole:
            out.append(
                "Encoder, one whole-sequence call per image (exact profile), median of "
                f"{next(iter(whole.values()))['runs']} image(s):\n"
            )
            out.append(
                table(
                    (
                        "threads",
                        "model ms",
                        "tables ms",
                        "coder ms",
                        "encode ms",
                        "tokens/s",
                        "model CPU ms",
                        "tokens/s (CPU)",
                    ),
                    [
                        (
                            t,
                            w["model_ms"],
                            w["tables_ms"],
                            w["coder_ms"],
                            w["encode_ms"],
                            w["tokens_per_s"],
                            w["model_cpu_ms"],
                            w["cpu_tokens_per_s"],
                        )
                        for t, w in whole.items()
                    ],
                )
            )
        for note in steps["notes"]:
            out.append(f"- {note}\n")
    cli = sp["cli"]
    out.append("### Command line (whole process, one image)\n")
    out.append(
        table(
            ("command", "median s", "median CPU s", "runs", "tokens/s", "peak RSS"),
            [
                (
                    CLI_LABELS[name],
                    cli[name]["median_seconds"],
                    cli[name].get("median_cpu_seconds"),
                    cli["runs"],
                    cli[name].get("tokens_per_s"),
                    _mib(cli[name]["peak_rss_bytes"]),
                )
                for name in CLI_LABELS
                if name in cli
            ],
        )
    )
    for note in sp["notes"]:
        out.append(f"- {note}\n")
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in sp["seconds"].items())
    out.append(f"Speed section wall time: {seconds}.\n")
    return "\n".join(out)


def bounds_section(b: dict[str, Any]) -> str:
    bw, mm = b["memory_bandwidth"], b["matmul"]
    rates = ", ".join(f"{r['gflop_per_s']:.1f} with {t} thread(s)" for t, r in mm.items())
    n = next(iter(mm.values()))["n"] if mm else None
    out = [
        "## Bounds\n",
        f"Memory bandwidth {bw['gb_per_s']:.1f} GB/s ({bw['method']}, {_mib(bw['array_bytes'])}); "
        f"numpy float32 matmul (n = {n}) GFLOP/s: {rates}. Bound = max(bytes / bandwidth, "
        "FLOPs / best matmul rate at <= the cell's threads), beside the measured model step; "
        "below 1 means the probe understated what the runtime reaches (e.g. weights served "
        "from cache).\n",
    ]
    header = (
        "batch",
        "threads",
        "past",
        "weights MiB",
        "KV MiB",
        "MFLOP",
        "memory ms",
        "compute ms",
        "measured ms",
        "measured / bound",
    )
    for name, rows in b["steps"].items():
        out.append(f"### {name}\n")
        out.append(
            table(
                header,
                [
                    (
                        row["batch"],
                        row["threads"],
                        row["past"],
                        row["weight_bytes"] / (1 << 20),
                        row["kv_bytes"] / (1 << 20),
                        row["flops"] / 1e6,
                        row["memory_bound_ms"],
                        row["compute_bound_ms"],
                        row["measured_model_ms"],
                        row["measured_over_bound"],
                    )
                    for row in rows
                ],
            )
        )
    for name, rows in b.get("whole_sequence", {}).items():
        out.append(f"### {name}: encoder's whole-sequence call (one image)\n")
        out.append(
            table(
                ("threads", "MFLOP", "memory ms", "compute ms", "measured ms", "measured / bound"),
                [
                    (
                        row["threads"],
                        row["flops"] / 1e6,
                        row["memory_bound_ms"],
                        row["compute_bound_ms"],
                        row["measured_model_ms"],
                        row["measured_over_bound"],
                    )
                    for row in rows
                ],
            )
        )
    return "\n".join(out)


def _ops(case: dict[str, Any], count: int = 5) -> str:
    return ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in case["op_types"][:count])


def _goal(met: bool, text: str) -> str:
    return f"{text}: {'met' if met else 'NOT met'}"


def profiles_section(p: dict[str, Any]) -> str:
    if "skipped" in p:
        return f"## Profiles: exact vs float\n\nSkipped: {p['skipped']}\n"
    cli = p["cli"]
    side = f"{p['side']}x{p['side']}"
    rows: list[tuple[object, ...]] = []
    for key, label in (("encode_model", "encoder model time"), ("encode_image", "whole encoder")):
        m = p[key]
        rows.append(
            (
                f"{label}, one {side} image (ms)",
                1e3 * m["exact"]["median_s"],
                1e3 * m["float"]["median_s"],
                f"float/exact {m['float_over_exact']:.2f}x",
                1e3 * m["exact"]["cpu_median_s"],
                1e3 * m["float"]["cpu_median_s"],
                f"{m['cpu_float_over_exact']:.2f}x",
                (
                    f"{_goal(m['goal_met'], '>= 3x')} (CPU: {_goal(m['goal_met_cpu'], '>= 3x')})"
                    if "goal_met" in m
                    else None
                ),
            )
        )
    for batch, row in p["decode"].items():
        ex, fl = row["exact"], row["float"]
        rows.append(
            (
                f"decode tokens/s, batch {batch} (CPU: model's share)",
                f"{ex['median_tokens_per_s']:,.0f}",
                f"{fl['median_tokens_per_s']:,.0f}",
                f"exact/float {row['exact_over_float']:.2f}",
                f"{ex['cpu_tokens_per_s']:,.0f} ({100 * ex['model_share_cpu']:.0f}%)",
                f"{fl['cpu_tokens_per_s']:,.0f} ({100 * fl['model_share_cpu']:.0f}%)",
                f"{row['cpu_exact_over_float']:.2f}",
                (
                    f">= {row['goal_tokens_per_s']:,.0f}: {'met' if row['goal_met'] else 'NOT met'}"
                    f" (CPU: {'met' if row['goal_met_cpu'] else 'NOT met'})"
                    if "goal_met" in row
                    else None
                ),
            )
        )
    for command in ("compress", "decompress"):
        c = cli[command]
        rows.append(
            (
                f"cli.py {command}, whole process (s)",
                c["exact"]["median_s"],
                c["float"]["median_s"],
                f"float/exact {c['float_over_exact']:.2f}x",
                c["exact"]["cpu_median_s"],
                c["float"]["cpu_median_s"],
                f"{c['cpu_float_over_exact']:.2f}x",
                None,
            )
        )
    out = [
        "## Profiles: exact vs float (issue 9)\n",
        f"One process, {p['threads']} thread, {p['rounds']} interleaved round(s) (medians); "
        f"exact `{p['bundles']['exact']['path']}`, float `{p['bundles']['float']['path']}`. "
        "Wall time carries the other processes' load; CPU time is the process's own "
        "(user + system), closer to what a quiet machine gives.\n",
        table(
            (
                "measure",
                "exact (wall)",
                "float (wall)",
                "ratio (wall)",
                "exact (CPU)",
                "float (CPU)",
                "ratio (CPU)",
                "goal",
            ),
            rows,
        ),
        f"Imports alone: {cli['imports_median_s']:.2f} s wall, "
        f"{cli['imports_cpu_median_s']:.2f} s CPU; file bytes "
        + ", ".join(f"{k} {v}" for k, v in cli["file_bytes"].items())
        + ".\n",
        "onnxruntime profiler, time by op type (share of kernel time; kernels' share of "
        "the run, the rest is per-node dispatch):\n",
        table(
            ("profile", "case", "nodes/run", "kernels / run", "top op types"),
            [
                (
                    name,
                    case,
                    t["nodes"] // max(1, _runs(case, p)),
                    t["kernel_share_of_run"],
                    _ops(t),
                )
                for name, cases in p["op_profiles"].items()
                for case, t in cases.items()
            ],
        ),
    ]
    return "\n".join(out)


def _runs(case: str, p: dict[str, Any]) -> int:
    return 1 if case.startswith("encode") else p.get("profile_steps", 1)


def sizes_section(z: dict[str, Any]) -> str:
    ref = str(z["reference_size"])
    rows = []
    for size in map(str, z["sizes"]):
        row = z["per_size"][size]
        ratio = z["ratios_to_reference"].get(size, {})
        rows.append(
            (
                size,
                row["mean_bytes_per_image"],
                row["bits_per_token"],
                ratio.get("ours", 1.0 if size == ref else None),
                (
                    f"<= {ratio['goal']}: {'met' if ratio['goal_met'] else 'NOT met'}"
                    if "goal" in ratio
                    else None
                ),
                row.get("brotli_bits_per_token"),
                ratio.get("brotli", 1.0 if size == ref else None),
            )
        )
    m = z["monotone"]
    return "\n".join(
        [
            "## Sizes (issue 10)\n",
            f"{z['images']} images, one image per file (headers included), model "
            f"{z['model']['fingerprint']} (positions {z['position_layout']}).\n",
            table(
                (
                    "--size",
                    "bytes/image",
                    "bits/token",
                    f"x bits/token at {ref}",
                    "goal",
                    "brotli bits/token",
                    f"brotli x at {ref}",
                ),
                rows,
            ),
            f"Bytes monotone in size: {m['violations']} violation(s) in "
            f"{m['adjacent_pairs_checked']} adjacent pairs; {m['photos_with_a_violation']} "
            "photo(s) with one.\n",
        ]
    )


KINDS = ("encode", "decode")


def fullres_section(f: dict[str, Any]) -> str:
    if "skipped" in f:
        return f"## Full resolution (issue 13)\n\nSkipped: {f['skipped']}.\n"
    summary = f["summary"]
    rows = [
        (
            r["photo"],
            f"{r['width']}x{r['height']}",
            r["ours_bits_per_pixel"],
            r["best_classical"],
            r["best_classical_bits_per_pixel"],
            f"{100 * r['saving_vs_best']:.1f}%",
            *(
                r.get(f"{kind}_s_per_mp_{t}t")
                for t in f["threads"]
                for kind in ("encode", "decode")
            ),
        )
        for r in f["rows"]
    ]
    timing = [f"{kind} s/MP {t} thr" for t in f["threads"] for kind in KINDS]
    classical = ", ".join(
        f"{name} {bpp:.3f}"
        for name, bpp in summary["classical_bits_per_pixel"].items()
        if "/" not in name or name.endswith("/u16le")
    )
    return "\n".join(
        [
            "## Full resolution (issue 13)\n",
            f"{summary['photos']} photos coded at their own size (`compress --full`), file "
            f"bytes with headers, against classical lossless codecs on the same palette "
            f"images (decoded back and compared). Model {f['model']}.\n",
            table(
                ("photo", "size", "ours bpp", "best classical", "its bpp", "ours below", *timing),
                rows,
            ),
            f"In total: ours {summary['ours_bits_per_pixel']:.3f} bits/pixel, best classical "
            f"{summary['best_classical_in_total']} "
            f"{summary['classical_bits_per_pixel'][summary['best_classical_in_total']]:.3f} "
            f"({100 * summary['saving_vs_best_in_total']:.1f}% below; goal 15%). Others: "
            f"{classical}.\n",
        ]
    )


def coder_section(c: dict[str, Any]) -> str:
    ours = c["ours"]
    rows = [
        (
            "ours (igpt_codec.core.coder)",
            ours["encode_symbols_per_s"],
            ours["decode_symbols_per_s"],
            ours["payload_bytes"],
            ours["coder_overhead_pct"],
        ),
    ]
    theirs = c.get("constriction")
    if theirs:
        for mode in ("prebuilt", "per_symbol", "vectorized"):
            t = theirs[mode]
            rows.append(
                (
                    f"constriction RangeEncoder, {CONSTRICTION_MODES[mode]}",
                    t["encode_symbols_per_s"],
                    t["decode_symbols_per_s"],
                    t["payload_bytes"],
                    100 * (t["payload_bytes"] - c["ideal_bytes"]) / c["ideal_bytes"],
                )
            )
    out = [
        "## Coder\n",
        f"{ours['symbols']} symbols over 512-symbol tables (entropies ~1-8 bits), median of "
        f"{ours['runs']} run(s); ideal under the integer tables {c['ideal_bytes']:.1f} bytes.\n",
        table(("coder", "encode sym/s", "decode sym/s", "bytes", "over ideal %"), rows),
        "Ours codes from precomputed cumulative tables, one call per symbol; "
        "constriction's first row is the like-for-like comparison.\n",
    ]
    if theirs:
        out.append(
            f"Size difference ours - constriction: {c['size_difference_bytes']:+d} bytes "
            f"({c['size_difference_pct']:+.3f}%).\n"
        )
    for note in c["notes"]:
        out.append(f"- {note}\n")
    return "\n".join(out)


def notes_section(r: dict[str, Any]) -> str:
    notes = [*r["notes"], *r["compression"]["notes"]]
    if not notes:
        return ""
    return "## Notes\n\n" + "".join(f"- {n}\n" for n in notes)


def markdown(results: dict[str, Any]) -> str:
    parts = [
        header_section(results),
        compression_section(results["compression"]),
        speed_section(results),
        bounds_section(results["bounds"]),
        profiles_section(results["profiles"]) if "profiles" in results else "",
        sizes_section(results["sizes"]) if "sizes" in results else "",
        fullres_section(results["full_resolution"]) if "full_resolution" in results else "",
        coder_section(results["coder"]),
        notes_section(results),
        per_image_section(results["compression"]),
    ]
    return "\n".join(p for p in parts if p)
