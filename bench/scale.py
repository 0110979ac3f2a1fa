"""Plain command line against Ray Data with 2 actors, side by side in one run.

    python -m bench.scale --images 1000 --out docs/bench-results/scale.json

The same N photos (32x32 by default, the shipped model) go through:

- plain: `python cli.py compress PHOTOS... -o all.igpt` (one process, onnxruntime's
  default threads: one per core, as a user runs it) and `python cli.py decompress
  all.igpt -o dir/`, each a fresh subprocess timed from start to exit;
- ray: `scale.compress_dataset` and `scale.decompress_dataset` with 2 actors (1 CPU and
  1 intra-op thread each) on a local Ray with 2 CPUs, started once before both jobs
  (its start-up time is reported apart; Ray Data's own job start-up is inside).

Images per second and tokens per second both ways, plus a check that both sides give
the same thumbnails (pixel for pixel). The shared training set holds ~645 photos, so
1,000 images reuse photos under second keys (pass1/..., the same bytes); coding cost
per image does not depend on having seen a photo before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.machine import describe_machine, load_average

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / "cli.py"
SUFFIXES = {".png", ".jpg", ".jpeg"}


def shared_train() -> Path:
    """…/shared/data/train, as the tests find it ($IGPT_SHARED_DATA overrides)."""
    override = os.environ.get("IGPT_SHARED_DATA")
    base = Path(override).expanduser() if override else REPO_ROOT.parent / "shared" / "data"
    return base / "train"


def build_tree(root: Path, count: int) -> list[str]:
    """`count` image keys under root (symlinks to shared photos, reused past the first
    pass under pass1/, pass2/, ...); returns the keys sorted."""
    photos = sorted(
        p for p in shared_train().rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
    )
    if not photos:
        raise SystemExit(f"no photos under {shared_train()}")
    keys = []
    for i in range(count):
        photo = photos[i % len(photos)]
        key = f"pass{i // len(photos)}/{photo.parent.name}/{photo.name}"
        link = root / key
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo)
        keys.append(key)
    return sorted(keys)


def run_timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=REPO_ROOT)
    return time.perf_counter() - start


def rates(images: int, tokens: int, seconds: float) -> dict[str, float]:
    return {
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def plain_side(work: Path, keys: list[str], size: int) -> dict[str, Any]:
    """The command line, one process per command, every image in one stream."""
    stream = work / "all.igpt"
    inputs = [str(work / "photos" / key) for key in keys]
    size_args = ["--size", str(size), "-q"]
    compress_s = run_timed(
        [sys.executable, str(CLI), "compress", *inputs, "-o", str(stream), *size_args]
    )
    out = work / "plain_png"
    decompress_s = run_timed(
        [sys.executable, str(CLI), "decompress", str(stream), "-o", f"{out}/", "-q"]
    )
    tokens = len(keys) * size * size
    return {
        "command": "python cli.py compress PHOTOS -o all.igpt; python cli.py decompress",
        "threads": "onnxruntime default (one per core)",
        "stream_bytes": stream.stat().st_size,
        "compress": rates(len(keys), tokens, compress_s),
        "decompress": rates(len(keys), tokens, decompress_s),
    }


def ray_side(work: Path, keys: list[str], size: int, actors: int, shard: int) -> dict[str, Any]:
    """Ray Data with a fixed actor pool on a local Ray started here (timed apart)."""
    import ray

    from igpt_codec.datasets import compress_dataset, decompress_dataset

    start = time.perf_counter()
    ray.init(address="local", num_cpus=actors, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - start
    try:
        dataset = work / "dataset"
        report = compress_dataset(
            work / "photos", dataset, size=size, shard_images=shard, actors=actors, quiet=True
        )
        if report.images != len(keys) or report.skipped:
            raise SystemExit(f"ray compressed {report.images} of {len(keys)} images")
        decoded = decompress_dataset(dataset, work / "ray_png", actors=actors, quiet=True)
    finally:
        ray.shutdown()
    tokens = len(keys) * size * size
    return {
        "actors": actors,
        "threads_per_actor": 1,
        "shard_images": shard,
        "shards": report.shards,
        "stream_bytes": report.stream_bytes,
        "index_bytes": (dataset / "index.jsonl").stat().st_size,
        "index_parquet_bytes": (dataset / "index.parquet").stat().st_size,
        "ray_start_s": round(ray_start_s, 2),
        "compress": rates(len(keys), tokens, report.seconds),
        "decompress": rates(len(keys), tokens, decoded.seconds),
    }


def same_thumbnails(work: Path, keys: list[str]) -> bool:
    """Plain output i (stream order = sorted keys) equals the Ray output for key i."""
    plain = sorted((work / "plain_png").glob("*.png"))
    if len(plain) != len(keys):
        return False
    for path, key in zip(plain, keys, strict=True):
        ray_png = (work / "ray_png" / key).with_suffix(".png")
        with Image.open(path) as a, Image.open(ray_png) as b:
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--shard-images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("docs/bench-results/scale.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="igpt-scale-bench-"))
    try:
        keys = build_tree(work / "photos", args.images)
        print(f"{len(keys)} images at {args.size}x{args.size}; plain CLI first", flush=True)
        plain = plain_side(work, keys, args.size)
        print(json.dumps(plain), flush=True)
        ray_result = ray_side(work, keys, args.size, args.actors, args.shard_images)
        print(json.dumps(ray_result), flush=True)
        identical = same_thumbnails(work, keys)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_actor = {
        step: round(ray_result[step]["tokens_per_s"] / args.actors, 1)
        for step in ("compress", "decompress")
    }
    result = {
        "benchmark": "bench.scale: plain CLI (one process) vs Ray Data actor pool",
        "images": len(keys),
        "size": args.size,
        "tokens": len(keys) * args.size**2,
        "model": "shipped default",
        "plain": plain,
        "ray": ray_result,
        "ray_tokens_per_s_per_actor": per_actor,
        "speedup": {
            step: round(plain[step]["seconds"] / ray_result[step]["seconds"], 3)
            for step in ("compress", "decompress")
        },
        "thumbnails_identical": identical,
        "machine": describe_machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup", "thumbnails_identical")}), flush=True)
    if not identical:
        raise SystemExit("the plain and Ray thumbnails differ")


if __name__ == "__main__":
    main()
