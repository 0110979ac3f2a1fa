"""python -m bench: compression, speed, bounds, profile, size and coder benchmarks.

Writes results.json, results.md and chart.png under --out. See docs/benchmarks.md
for what each number means. A full run takes several minutes on two cores; --quick
takes about one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import config as presets
from bench.data import select_images
from bench.run import CHART_PNG, ONLY_SECTIONS, RESULTS_JSON, RESULTS_MD, run, run_only
from bench.speed_release import ReleaseError, plan_from
from bench.speed_release import add_arguments as add_speed_release_arguments
from igpt_codec.format.errors import CodecError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Compression, speed, bounds and coder benchmarks."
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="image directory (default: the held-out validation photos)",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="use the first N images only")
    parser.add_argument("--size", type=int, default=32, help="coded side N (default 32)")
    parser.add_argument(
        "--model", type=Path, metavar="DIR", help="model bundle (default: codec/models/default)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench_out"), help="output directory (default bench_out/)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="about a minute: 3 images, single runs, no iGPT-S"
    )
    parser.add_argument(
        "--igpt-s",
        metavar="DIR|auto|none",
        help="iGPT-S-shaped bundle for the speed section; auto exports one into --out "
        "(needs torch). Default: auto, or none with --quick",
    )
    parser.add_argument(
        "--float-model",
        metavar="DIR|auto|none",
        default="auto",
        help="float bundle for the exact-vs-float comparison; auto exports the default "
        "model's float parent into --out (needs torch). Default: auto",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime threads for the end-to-end compression runs (default 1)",
    )
    parser.add_argument(
        "--list-images", action="store_true", help="print the images a run would use and exit"
    )
    parser.add_argument(
        "--only",
        choices=ONLY_SECTIONS,
        help="run this opt-in section alone (speed-release: issue 23's figures beside the "
        "release, docs/benchmarks.md); a full run leaves it out",
    )
    add_speed_release_arguments(parser.add_argument_group("speed-release (with --only)"))
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if not 1 <= args.size <= 32:
        parser.error("--size must be 1..32")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    make = presets.quick if args.quick else presets.full
    overrides = {
        "images": args.images,
        "size": args.size,
        "model": args.model,
        "out": args.out,
        "threads": args.threads,
        "float_model": args.float_model,
    }
    if args.limit is not None:
        overrides["limit"] = args.limit
    if args.igpt_s is not None:
        overrides["igpt_s"] = args.igpt_s
    config = make(**overrides)
    try:
        config = config.with_(speed_release=plan_from(args, config.speed_release))
        if args.list_images:
            print("\n".join(str(p) for p in select_images(config.images, config.limit)))
            return 0
        if args.only:
            run_only(config, args.only)
            for name in (RESULTS_JSON, RESULTS_MD):
                print(config.out / name)
            return 0
        run(config)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (CodecError, FileNotFoundError) as exc:
        hint = " (pass --model DIR)" if config.model is None and "bundle" in str(exc) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    for name in (RESULTS_JSON, RESULTS_MD, CHART_PNG):
        print(config.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
