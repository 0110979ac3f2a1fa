"""One benchmark run: every section in order, then results.json, results.md and chart.png.

Sections are independent measurements that share the loaded bundle and the
tokenized thumbnails. Each records its wall time under `timings_s`, which is
what to look at when a run gets too slow for its budget.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bounds import (
    bound_rows,
    measure_bandwidth,
    measure_matmul_threads,
    whole_sequence_rows,
)
from bench.classical import find_competitors, measure
from bench.cli_timing import time_cli
from bench.coder_compare import compare_coders
from bench.compression import summarize
from bench.config import BenchConfig
from bench.data import Thumbnail, load_thumbnails, select_images
from bench.fullres import measure_fullres
from bench.igpt_s import resolve_igpt_s
from bench.machine import describe_machine, load_average
from bench.ours import OursResult, run_ours
from bench.profiles import compare as compare_profiles
from bench.profiles import resolve_float
from bench.sizes import measure_sizes
from bench.speed_release import markdown as speed_release_markdown
from bench.speed_release import measure as measure_speed_release
from bench.stepbench import bundle_summary, run_steps
from bench.timing import SectionClock, median
from igpt_codec.runtime.bundle import Bundle, load_bundle

SCHEMA_VERSION = 2
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CHART_PNG = "chart.png"

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def compression_section(
    thumbnails: list[Thumbnail], bundle: Bundle, config: BenchConfig, log: Log
) -> tuple[dict[str, Any], OursResult]:
    competitors = find_competitors()
    sizes, problems = [], []
    for thumbnail in thumbnails:
        found, issues = measure(competitors, thumbnail.tokens.tokens, bundle.palette, config.size)
        sizes.append(found)
        problems += [f"{thumbnail.name}: {issue}" for issue in issues]
    log(f"  classical codecs done ({len(competitors.image_codecs)} image codecs)")
    ours = run_ours(thumbnails, bundle, config.size, config.threads, log=log)
    log(f"  ours done: shared stream {ours.shared_stream['stream_bytes']} bytes")
    section = summarize(ours, sizes, competitors)
    section["notes"] += problems
    section["threads"] = config.threads
    return section, ours


def end_to_end(ours: OursResult, threads: int) -> dict[str, Any]:
    """Whole-image API speeds from the compression section (real images, real batches)."""
    alone = [row["tokens"] / row["alone_encode_seconds"] for row in ours.per_image]
    shared = ours.shared_stream
    return {
        "alone_encode": {
            "batch": 1,
            "threads": threads,
            "images": len(alone),
            "median_tokens_per_s": median(alone),
            "what": "api.compress_to per image: tokenize, session creation, all steps, container",
        },
        "shared_stream": {
            "batch": shared["decode_batch"],
            "encode_batch": shared["encode_batch"],
            "threads": threads,
            "images": shared["images"],
            "encode_tokens_per_s": shared["encode_tokens_per_s"],
            "decode_tokens_per_s": shared["decode_tokens_per_s"],
            "what": "api.compress_to / api.decompress of all images in one stream (one run)",
        },
    }


def estimate_check(sampled: dict[str, Any], e2e: dict[str, Any]) -> dict[str, Any] | None:
    """The sampled batch-1 estimate beside the measured whole images at the same threads."""
    threads = e2e["alone_encode"]["threads"]
    for row in sampled["estimates"]:
        if row["batch"] == 1 and row["threads"] == threads and row["whole_image_estimate"]:
            measured = e2e["alone_encode"]["median_tokens_per_s"]
            return {
                "threads": threads,
                "estimated_encode_tokens_per_s": row["encode_tokens_per_s"],
                "measured_encode_tokens_per_s": measured,
                "estimate_over_measured": row["encode_tokens_per_s"] / measured,
            }
    return None


def speed_section(
    bundle: Bundle, ours: OursResult, thumbnails: list[Thumbnail], config: BenchConfig, log: Log
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    positions = config.size * config.size
    sampled: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    clock = SectionClock()
    start = time.perf_counter()
    log("speed: default bundle, sampled steps")
    sampled["default"] = run_steps(bundle, config.default_steps, positions, log=log)
    clock.lap("default_steps", start)
    start = time.perf_counter()
    resolved = resolve_igpt_s(config.igpt_s, config.out)
    clock.lap("igpt_s_bundle", start)  # an export, the first time with `auto`
    if resolved.note:
        notes.append(resolved.note)
    if resolved.bundle is not None:
        start = time.perf_counter()
        log(f"speed: iGPT-S bundle {resolved.bundle.path}")
        sampled["igpt_s"] = run_steps(resolved.bundle, config.igpt_s_steps, positions, log=log)
        sampled["igpt_s"]["exported_by_this_run"] = resolved.exported
        clock.lap("igpt_s_steps", start)
    start = time.perf_counter()
    log("speed: command line")
    cli = time_cli(thumbnails[0].path, bundle.path, config.size, config.cli_runs)
    clock.lap("cli", start)
    e2e = end_to_end(ours, config.threads)
    section = {
        "end_to_end": e2e,
        "sampled": sampled,
        "estimate_check": estimate_check(sampled["default"], e2e),
        "cli": cli,
        "notes": notes,
        "seconds": clock.seconds,
    }
    return section, sampled


def bounds_section(sampled: dict[str, dict[str, Any]], config: BenchConfig) -> dict[str, Any]:
    bandwidth = measure_bandwidth(config.bandwidth_mib, config.probe_repeats)
    threads = {t for steps in sampled.values() for t in steps["plan"]["threads"]}
    matmul = measure_matmul_threads(config.matmul_n, config.probe_repeats, sorted(threads))
    rows = {
        name: bound_rows(steps, bandwidth["gb_per_s"], matmul) for name, steps in sampled.items()
    }
    whole = {
        name: whole_sequence_rows(steps, bandwidth["gb_per_s"], matmul)
        for name, steps in sampled.items()
        if steps.get("whole_sequence")
    }
    return {
        "memory_bandwidth": bandwidth,
        "matmul": matmul,
        "steps": rows,
        "whole_sequence": whole,
    }


def profiles_section(
    bundle: Bundle, thumbnails: list[Thumbnail], config: BenchConfig, log: Log
) -> dict[str, Any]:
    """Issue 9's exact-vs-float comparison (bench.profiles), or why it was skipped."""
    if not bundle.exact:
        return {"skipped": "the bundle under test is not exact; nothing to compare it with"}
    resolved = resolve_float(config.float_model, bundle, config.out)
    if resolved.bundle is None:
        return {"skipped": resolved.note}
    log(f"profiles: exact {bundle.path} vs float {resolved.bundle.path}")
    result = compare_profiles(
        bundle, resolved.bundle, [t.path for t in thumbnails], config.profile_plan, log=log
    )
    result["float_exported_by_this_run"] = resolved.exported
    return result


def sizes_section(
    bundle: Bundle, thumbnails: list[Thumbnail], config: BenchConfig, log: Log
) -> dict[str, Any]:
    """Issue 10's size table (bench.sizes) on the run's images."""
    sizes = tuple(s for s in config.size_table if s * s <= bundle.n_positions)
    log(f"sizes: {', '.join(map(str, sizes))}")
    return measure_sizes(
        [t.name for t in thumbnails],
        [t.loaded for t in thumbnails],
        bundle,
        sizes,
        threads=config.threads,
        log=log,
    )


def fullres_section(
    bundle: Bundle, paths: list[Path], config: BenchConfig, log: Log
) -> dict[str, Any]:
    """Issue 13's full-resolution comparison (bench.fullres) on the run's first photos."""
    if not bundle.exact or config.fullres_photos < 1:
        return {"skipped": "needs an exact bundle" if not bundle.exact else "fullres_photos 0"}
    chosen = paths[: config.fullres_photos]
    log(
        f"full resolution: {len(chosen)} photos"
        + (f", crop {config.fullres_crop}" if config.fullres_crop else "")
    )
    return measure_fullres(bundle, chosen, config.fullres_threads, log, config.fullres_crop)


def speed_release_section(config: BenchConfig, log: Log) -> dict[str, Any]:
    """Issue 23's figures beside release 1df2fe8 (bench.speed_release); opt-in only."""
    images = select_images(config.images, config.limit) if config.images else None
    return measure_speed_release(config.speed_release, config.out, config.model, images, log=log)


ONLY_SECTIONS = ("speed-release",)
"""Sections `python -m bench --only NAME` runs alone; a full run leaves them out (the
release comparison needs the git history and ~20-40 minutes)."""


def _results_header(config: BenchConfig) -> dict[str, Any]:
    """What every results.json starts with: schema, time, command, config and machine."""
    return {
        "schema": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "config": config.to_json(),
        "machine": describe_machine(),
        "notes": [],
    }


def run_only(config: BenchConfig, section: str, log: Log = stderr_log) -> dict[str, Any]:
    """One opt-in section alone: results.json and results.md with it and the machine."""
    if section not in ONLY_SECTIONS:
        raise ValueError(f"unknown section {section!r}; one of {', '.join(ONLY_SECTIONS)}")
    clock = SectionClock()
    config.out.mkdir(parents=True, exist_ok=True)
    results = _results_header(config)
    start = time.perf_counter()
    results["speed_release"] = speed_release_section(config, log)
    clock.lap("speed_release", start)
    results["machine"]["load_average_end"] = load_average()
    results["timings_s"] = {**clock.seconds, "total": clock.total()}
    (config.out / RESULTS_JSON).write_text(
        json.dumps(results, indent=1, default=_json_default) + "\n"
    )
    (config.out / RESULTS_MD).write_text(speed_release_markdown(results["speed_release"]))
    return results


def run(config: BenchConfig, log: Log = stderr_log) -> dict[str, Any]:
    """Run every section and write the three output files; returns the results."""
    clock = SectionClock()
    config.out.mkdir(parents=True, exist_ok=True)
    results = _results_header(config)
    start = time.perf_counter()
    bundle = load_bundle(config.model)
    paths = select_images(config.images, config.limit)
    thumbnails = load_thumbnails(paths, bundle, config.size)
    results["model"] = bundle_summary(bundle)
    results["images"] = {
        "source": str(config.images) if config.images else "held-out validation photos",
        "count": len(thumbnails),
        "size": config.size,
        "tokens_per_image": config.size * config.size,
        "names": [t.name for t in thumbnails],
    }
    clock.lap("load", start)
    log(f"{len(thumbnails)} images, model {bundle.path} ({bundle.fingerprint.hex()})")

    start = time.perf_counter()
    log("compression")
    results["compression"], ours = compression_section(thumbnails, bundle, config, log)
    clock.lap("compression", start)

    start = time.perf_counter()
    results["speed"], sampled = speed_section(bundle, ours, thumbnails, config, log)
    clock.lap("speed", start)

    start = time.perf_counter()
    log("bounds: memory bandwidth and matmul throughput")
    results["bounds"] = bounds_section(sampled, config)
    clock.lap("bounds", start)

    start = time.perf_counter()
    results["profiles"] = profiles_section(bundle, thumbnails, config, log)
    clock.lap("profiles", start)

    start = time.perf_counter()
    results["sizes"] = sizes_section(bundle, thumbnails, config, log)
    clock.lap("sizes", start)

    start = time.perf_counter()
    results["full_resolution"] = fullres_section(bundle, paths, config, log)
    clock.lap("full_resolution", start)

    start = time.perf_counter()
    log("coder: ours and constriction")
    results["coder"] = compare_coders(config.coder_symbols, config.coder_runs)
    clock.lap("coder", start)

    results["machine"]["load_average_end"] = load_average()
    results["timings_s"] = {**clock.seconds, "total": clock.total()}
    write_outputs(results, config.out)
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md, and chart.png where matplotlib is installed."""
    from bench.report import markdown

    try:
        from bench.chart import write_chart
    except ImportError:  # the bench extra is optional; the numbers do not need the picture
        write_chart = None
        results["notes"].append("chart.png not written: matplotlib is not installed")
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    (out / RESULTS_MD).write_text(markdown(results))
    if write_chart is not None:
        write_chart(results, out / CHART_PNG)


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
