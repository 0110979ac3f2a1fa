"""Issue 23's speed figures, the current tree side by side with a release (1df2fe8) in one run.

Speed claims on this shared two-core machine mean little alone: its speed changes by
20-40% from hour to hour. So every figure here is measured on both codebases in the
same run, their rounds interleaved (the order flips every round), and reported as
medians and as ratios. The release runs its own code and its own default bundle from a
git worktree (`git worktree add --detach OUT/release-COMMIT COMMIT`), so files each
release writes are decoded by the same release.

- **768x512**: the photo of the earlier full-resolution timings (held-out
  wikipedia-photos/045.png, Lanczos-resized to 768x512, as `bench.fullres_codings
  --resize 768x512` did), `cli.py compress --full` and `decompress`, default threads:
  wall seconds, CPU seconds (the child's user + system, all threads) and peak RSS.
- **Threads**: CPU time / wall time of those runs at 2 threads (the default on a
  2-core machine; extra `--threads 2` runs otherwise).
- **Thumbnails**, 1 thread: decode tokens/s at batch 16 and 1 through each tree's own
  `bench.profiles` (the pipeline's batch decoder on 16 held-out photos, tokens checked),
  the way the release's figures (5,896 and 1,627) were measured. Each tree runs in its
  own long-lived worker process; the parent asks them in turn.
- **Whole process**: `cli.py compress PHOTO --size 32 --threads 1` plus `decompress` of
  the first held-out photo, wall seconds together (as `bench.profiles` timed the CLI).
- **24 megapixels** (`--mp24`, off by default: the release needs over an hour): one
  compress and decompress of 045.png resized to 6000x4000, time and peak RSS of each.

    python -m bench --only speed-release            # the section, results.json + results.md
    python -m bench.speed_release --model DIR --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import cli_timing
from bench.config import SpeedReleasePlan
from bench.data import select_images, validation_images
from bench.fullres import load_photo
from bench.machine import load_average
from bench.timing import median

REPO_ROOT = Path(__file__).resolve().parents[1]
FULLRES_PHOTO = "wikipedia-photos/045.png"
"""The held-out photo of docs/full-resolution.md's 768x512 timings (44.5 s / 25.9 s)."""
RELEASE_FIGURES = {
    "fullres_decode_s": 44.5,
    "fullres_encode_s": 25.9,
    "thumbnail_decode_tokens_per_s": {"16": 5896, "1": 1627},
    "whole_process_s": 1.45,
    "source": "issue 23 (docs/full-resolution.md, docs/bench-results/profiles_v3.json)",
}
GOALS = {
    "fullres_decode_s": 15.0,
    "fullres_encode_s": 8.0,
    "fullres_speedup": 3.0,
    "thumbnail_decode_tokens_per_s": {"16": 12000.0, "1": 3000.0},
    "whole_process_s": 0.6,
    "mp24_peak_rss_bytes": 1 << 30,
}
TREES = ("release", "current")
MARK = "@@speed_release "
"""Prefix of the workers' answer lines (anything else a library prints is ignored)."""

Log = Callable[[str], None]


class ReleaseError(RuntimeError):
    """The release cannot be set up or run (no worktree, wrong code imported, a child failed)."""


@dataclass(frozen=True)
class Tree:
    """One codebase: where it lives, the bundle it codes with, the environment of its children."""

    name: str
    root: Path
    model: Path
    package: str
    """The package its code lives in: `codec` (release layout) or `igpt_codec` (today)."""

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # Children read the bytecode compile_tree() wrote, as an installed package does
        # (pip compiles it at install): a PYTHONDONTWRITEBYTECODE in this environment
        # would have every process compile its sources again (about 60 ms each).
        dropped = ("IGPT_CODEC_MODELS", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env.update(extra or {})
        return env

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, str(self.root / "cli.py"), *args]


@dataclass
class ChildRun:
    """One finished subprocess: wall and CPU seconds (user + system, all its threads), peak RSS."""

    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    status: int
    stderr_tail: str


_SKIPPED_DIRS = re.compile(r"[/\\](\.git|\.venv|bench_out|node_modules|build)([/\\]|$)")


def compile_tree(tree: Tree) -> None:
    """Write the tree's bytecode once, before anything is timed (see Tree.env)."""
    compileall.compile_dir(str(tree.root), rx=_SKIPPED_DIRS, quiet=2, workers=1)


def run_child(args: list[str], tree: Tree, env: dict[str, str] | None = None) -> ChildRun:
    """Run one command in `tree`'s root with its environment (bench.cli_timing.run_child:
    peak RSS from VmHWM polling, CPU from wait4)."""
    seconds, status, peak, tail, cpu_seconds = cli_timing.run_child(
        args, cwd=tree.root, env=env or tree.env()
    )
    return ChildRun(
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        peak_rss_bytes=peak,
        status=status,
        stderr_tail=tail.strip(),
    )


def _checked(run: ChildRun, what: str) -> ChildRun:
    if run.status != 0:
        last = run.stderr_tail.splitlines()[-1] if run.stderr_tail else "no message"
        raise ReleaseError(f"{what} exited with {run.status}: {last}")
    return run


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ReleaseError(f"git {' '.join(args)}: {message}")
    return done.stdout.strip()


def make_worktree(commit: str, directory: Path) -> tuple[str, bool]:
    """A detached worktree of `commit` at `directory` (reused when it is already one at that
    commit); returns (full commit hash, whether this call created it)."""
    if not commit or commit.startswith("-"):
        raise ReleaseError(f"cannot make a worktree of release {commit!r}: not a commit name")
    try:
        full = _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except ReleaseError as exc:
        raise ReleaseError(f"cannot make a worktree of release {commit}: unknown commit") from exc
    if directory.exists():
        try:
            head = _git("rev-parse", "HEAD", cwd=directory)
        except ReleaseError:
            head = None
        if head != full or not (directory / "cli.py").is_file():
            raise ReleaseError(
                f"{directory} exists and is not a worktree of {commit}: remove it or pick --out"
            )
        return full, False
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        _git("worktree", "add", "--detach", str(directory), full)
    except ReleaseError as exc:
        raise ReleaseError(f"cannot make a worktree of release {commit}: {exc}") from exc
    return full, True


def remove_worktree(directory: Path) -> None:
    _git("worktree", "remove", "--force", str(directory))


def verify_code(tree: Tree) -> dict[str, str]:
    """Which files the tree's children really import: the release must run its own `codec`,
    `format`, `cli` and `bench`, never the installed igpt_codec (and today's tree its own)."""
    modules = ["cli", tree.package, "bench.profiles"] + (
        ["format"] if tree.package == "codec" else []
    )
    code = (
        "import importlib, json, sys\n"
        f"names = {modules!r}\n"
        "files = {n: importlib.import_module(n).__file__ for n in names}\n"
        "files['igpt_codec loaded'] = str(any(m.startswith('igpt_codec') for m in sys.modules))\n"
        f"print({MARK!r} + json.dumps(files))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree.root, env=tree.env(), capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ReleaseError(f"{tree.name} tree {tree.root}: its code does not import: {tail}")
    files: dict[str, str] = json.loads(lines[-1][len(MARK) :])
    root = tree.root.resolve()
    for name in modules:
        if not Path(files[name]).resolve().is_relative_to(root):
            raise ReleaseError(f"{tree.name}: {name} came from {files[name]}, not from {root}")
    if tree.package == "codec" and files["igpt_codec loaded"] != "False":
        raise ReleaseError(f"{tree.name}: the release's code imported the installed igpt_codec")
    return files


def _fingerprint(model: Path) -> str:
    try:
        return str(json.loads((model / "manifest.json").read_text())["fingerprint"])
    except (OSError, ValueError, KeyError) as exc:
        raise ReleaseError(f"{model}: no readable bundle manifest ({exc})") from exc


def _orders(rounds: int) -> list[tuple[str, ...]]:
    return [TREES if r % 2 == 0 else TREES[::-1] for r in range(rounds)]


def _run_stats(runs: list[ChildRun]) -> dict[str, Any]:
    wall = [r.seconds for r in runs]
    cpu = [r.cpu_seconds for r in runs]
    return {
        "median_s": median(wall),
        "median_cpu_s": median(cpu),
        "cpu_over_wall": median([r.cpu_seconds / r.seconds for r in runs]),
        "runs_s": wall,
        "cpu_runs_s": cpu,
        "peak_rss_bytes": max(r.peak_rss_bytes for r in runs),
    }


def _pair(rows: dict[str, dict[str, Any]], goal_s: float | None) -> dict[str, Any]:
    """Release and current rows with the speed-up (release time / current time)."""
    speedup = rows["release"]["median_s"] / rows["current"]["median_s"]
    pair: dict[str, Any] = {**rows, "speedup": speedup}
    pair["cpu_speedup"] = rows["release"]["median_cpu_s"] / rows["current"]["median_cpu_s"]
    if goal_s is not None:
        pair["goal_s"] = goal_s
        pair["goal_met"] = rows["current"]["median_s"] <= goal_s
    return pair


def _palette_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _full_round_trip(
    trees: dict[str, Tree],
    photo: Path,
    tmp: Path,
    rounds: int,
    threads: int | None,
    log: Log,
    label: str,
) -> dict[str, Any]:
    """`compress --full` then `decompress` of `photo` in each tree, rounds interleaved."""
    extra = [] if threads is None else ["--threads", str(threads)]
    runs: dict[tuple[str, str], list[ChildRun]] = {}
    for r, order in enumerate(_orders(rounds)):
        for step in ("compress", "decompress"):
            for name in order:
                tree = trees[name]
                stream, png = tmp / f"{name}.igpt", tmp / f"{name}.png"
                if step == "compress":
                    args = ["compress", "--full", str(photo), "-o", str(stream)]
                else:
                    args = ["decompress", str(stream), "-o", str(png)]
                args += ["--model", str(tree.model), "-q", "-f", *extra]
                run = _checked(run_child(tree.cli(*args), tree), f"{name} cli.py {step} ({label})")
                runs.setdefault((step, name), []).append(run)
                log(f"  {label} round {r + 1}/{rounds}: {name} {step} {run.seconds:.2f} s")
    from PIL import Image

    with Image.open(photo) as image:
        issue_size = image.size == (768, 512)  # the goals are the issue's, for this size
    result: dict[str, Any] = {
        "compress": _pair(
            {n: _run_stats(runs[("compress", n)]) for n in TREES},
            GOALS["fullres_encode_s"] if issue_size else None,
        ),
        "decompress": _pair(
            {n: _run_stats(runs[("decompress", n)]) for n in TREES},
            GOALS["fullres_decode_s"] if issue_size else None,
        ),
    }
    pixels = {name: _palette_pixels(tmp / f"{name}.png") for name in TREES}
    height, width = pixels["current"].shape[:2]
    sizes = {name: (tmp / f"{name}.igpt").stat().st_size for name in TREES}
    result["bytes"] = sizes
    result["bits_per_pixel"] = {name: 8 * size / (width * height) for name, size in sizes.items()}
    result["same_decoded_pixels"] = bool(np.array_equal(pixels["release"], pixels["current"]))
    return result


def measure_fullres(
    trees: dict[str, Tree], photo: Path, plan: SpeedReleasePlan, tmp: Path, log: Log
) -> dict[str, Any]:
    """768x512 at default threads, and the CPU / wall ratio at `plan.ratio_threads`."""
    size = tuple(plan.fullres_size)
    png = tmp / f"fullres_{size[0]}x{size[1]}.png"
    load_photo(photo, resize=size).rgb.save(png)
    default_threads = {
        "release": max(1, os.cpu_count() or 1),  # 1df2fe8: codec.pipeline.full_workers
        "current": len(os.sched_getaffinity(0)),  # today's CLI: the CPUs it may use
    }
    log(f"768x512: {photo} resized to {size[0]}x{size[1]}, default threads {default_threads}")
    result = {
        "photo": str(photo),
        "resize": list(size),
        "resample": "Lanczos (bench.fullres.load_photo)",
        "rounds": plan.fullres_rounds,
        "default_threads": default_threads,
        **_full_round_trip(trees, png, tmp, plan.fullres_rounds, None, log, "768x512"),
    }
    want = plan.ratio_threads
    if all(t == want for t in default_threads.values()):
        source = result
        how = f"the default-thread runs above, {want} threads"
    else:
        source = _full_round_trip(trees, png, tmp, 1, want, log, f"768x512 --threads {want}")
        how = f"one extra round with --threads {want}"
    result["threads"] = {
        "threads": want,
        "from": how,
        "what": "child's user + system CPU seconds / wall seconds (os.wait4), median",
        "decode": {n: source["decompress"][n]["cpu_over_wall"] for n in TREES},
        "encode": {n: source["compress"][n]["cpu_over_wall"] for n in TREES},
    }
    return result


class Worker:
    """A long-lived child process running one tree's `bench.profiles` decoder on thumbnails."""

    CODE = """
import json, sys
from pathlib import Path
MARK = {mark!r}
def answer(value):
    print(MARK + json.dumps(value), flush=True)
request = json.loads(sys.stdin.readline())
import bench.profiles as profiles
from bench.config import ProfilePlan
if request["package"] == "codec":
    from codec.bundle import load_bundle
else:
    from igpt_codec.runtime.bundle import load_bundle
bundle = load_bundle(Path(request["model"]))
plan = ProfilePlan(side=request["side"], batches=tuple(request["batches"]), threads=1)
side = profiles._Side(bundle, [Path(p) for p in request["photos"]], plan)
side.decode(1)  # warm-up: session arenas and first-call costs, untimed
answer({{"fingerprint": bundle.fingerprint.hex(), "profiles": profiles.__file__}})
for line in sys.stdin:
    wall, cpu = side.decode(int(json.loads(line)["batch"]))
    answer({{"wall": wall, "cpu": cpu}})
"""

    def __init__(self, tree: Tree, photos: list[Path], side: int, batches: tuple[int, ...]):
        self.tree = tree
        code = self.CODE.format(mark=MARK)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker)
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tree.root,
            env=tree.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        request = {
            "package": tree.package,
            "model": str(tree.model),
            "side": side,
            "batches": list(batches),
            "photos": [str(p) for p in photos],
        }
        self.hello = self._ask(request)

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        while True:
            line = self.process.stdout.readline()
            if not line:
                self._err.seek(0)
                tail = self._err.read().decode(errors="replace").strip().splitlines()
                self.close()
                raise ReleaseError(
                    f"{self.tree.name} thumbnail worker failed: {tail[-1] if tail else 'no output'}"
                )
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])

    def decode(self, batch: int) -> tuple[float, float]:
        answer = self._ask({"batch": batch})
        return float(answer["wall"]), float(answer["cpu"])

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._err.close()


def measure_thumbnails(
    trees: dict[str, Tree], photos: list[Path], plan: SpeedReleasePlan, log: Log
) -> dict[str, Any]:
    """Decode tokens/s at each batch, 1 thread, each tree's own pipeline decoder."""
    count = max(plan.thumb_batches)
    chosen = [photos[i % len(photos)] for i in range(count)]
    workers: dict[str, Worker] = {}
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for name in TREES:
            workers[name] = Worker(trees[name], chosen, plan.thumb_side, plan.thumb_batches)
        for r, order in enumerate(_orders(plan.thumb_rounds)):
            for name in order:
                for batch in plan.thumb_batches:
                    times.setdefault((name, batch), []).append(workers[name].decode(batch))
            log(f"  thumbnails round {r + 1}/{plan.thumb_rounds}")
    finally:
        for worker in workers.values():
            worker.close()
    tokens = plan.thumb_side**2
    decode: dict[str, Any] = {}
    for batch in plan.thumb_batches:
        row: dict[str, Any] = {}
        for name in TREES:
            wall = [t[0] for t in times[(name, batch)]]
            cpu = [t[1] for t in times[(name, batch)]]
            row[name] = {
                "median_tokens_per_s": batch * tokens / median(wall),
                "cpu_tokens_per_s": batch * tokens / median(cpu),
                "runs_s": wall,
            }
        row["ratio"] = row["current"]["median_tokens_per_s"] / row["release"]["median_tokens_per_s"]
        row["cpu_ratio"] = row["current"]["cpu_tokens_per_s"] / row["release"]["cpu_tokens_per_s"]
        goal = GOALS["thumbnail_decode_tokens_per_s"].get(str(batch))
        if goal is not None and plan.thumb_side == 32:
            row["goal_tokens_per_s"] = goal
            row["goal_met"] = row["current"]["median_tokens_per_s"] >= goal
        decode[str(batch)] = row
    return {
        "threads": 1,
        "side": plan.thumb_side,
        "rounds": plan.thumb_rounds,
        "photos": [str(p) for p in chosen],
        "what": "each tree's bench.profiles._Side.decode: the pipeline's batch decoder "
        "(model step, tables, range decoder, token check), one onnxruntime thread",
        "fingerprints": {n: w.hello["fingerprint"] for n, w in workers.items()},
        "decode": decode,
    }


def measure_whole_process(
    trees: dict[str, Tree], photo: Path, plan: SpeedReleasePlan, tmp: Path, log: Log
) -> dict[str, Any]:
    """`cli.py compress --size N --threads 1` + `decompress` of one photo, whole processes."""
    runs: dict[tuple[str, str], list[ChildRun]] = {}
    totals: dict[str, list[float]] = {n: [] for n in TREES}
    side = str(plan.thumb_side)
    for r, order in enumerate(_orders(plan.cli_rounds)):
        for name in order:
            tree = trees[name]
            stream, png = tmp / f"thumb_{name}.igpt", tmp / f"thumb_{name}.png"
            common = ["--model", str(tree.model), "--threads", "1", "-q", "-f"]
            compress = tree.cli("compress", str(photo), "-o", str(stream), "--size", side, *common)
            decompress = tree.cli("decompress", str(stream), "-o", str(png), *common)
            c = _checked(run_child(compress, tree), f"{name} cli.py compress (thumbnail)")
            d = _checked(run_child(decompress, tree), f"{name} cli.py decompress (thumbnail)")
            runs.setdefault(("compress", name), []).append(c)
            runs.setdefault(("decompress", name), []).append(d)
            totals[name].append(c.seconds + d.seconds)
        log(f"  whole process round {r + 1}/{plan.cli_rounds}")
    rows: dict[str, Any] = {}
    for name in TREES:
        rows[name] = {
            "median_s": median(totals[name]),
            "median_cpu_s": median(
                [
                    c.cpu_seconds + d.cpu_seconds
                    for c, d in zip(
                        runs[("compress", name)], runs[("decompress", name)], strict=True
                    )
                ]
            ),
            "runs_s": totals[name],
            "compress": _run_stats(runs[("compress", name)]),
            "decompress": _run_stats(runs[("decompress", name)]),
            "file_bytes": (tmp / f"thumb_{name}.igpt").stat().st_size,
        }
    result = _pair(rows, GOALS["whole_process_s"] if plan.thumb_side == 32 else None)
    same = np.array_equal(
        _palette_pixels(tmp / "thumb_release.png"), _palette_pixels(tmp / "thumb_current.png")
    )
    return {
        "photo": str(photo),
        "side": plan.thumb_side,
        "threads": 1,
        "rounds": plan.cli_rounds,
        "what": "median over rounds of compress + decompress wall seconds, fresh processes",
        **result,
        "same_decoded_pixels": bool(same),
    }


def measure_mp24(
    trees: dict[str, Tree], photo: Path, plan: SpeedReleasePlan, tmp: Path, log: Log
) -> dict[str, Any]:
    """One compress and decompress of `photo` resized to `plan.mp24_size`, default threads;
    a failure (a limit, memory) is recorded, not raised: it is a finding."""
    size = tuple(plan.mp24_size)
    png = tmp / f"mp24_{size[0]}x{size[1]}.png"
    load_photo(photo, resize=size).rgb.save(png)
    pixels = size[0] * size[1]
    # Today's decoder refuses images over 16 MP by default (docs/hardening.md); the release
    # has no such limit and ignores these variables.
    floor = 1 << 24  # the defaults: never lower a limit, only raise it for the large image
    limits = {
        "IGPT_CODEC_MAX_PIXELS": str(max(pixels, floor)),
        "IGPT_CODEC_MAX_WORK": str(max(4 * pixels, floor)),
    }
    names = ["current"] + (["release"] if plan.mp24_release else [])
    result: dict[str, Any] = {
        "photo": str(photo),
        "resize": list(size),
        "megapixels": pixels / 1e6,
        "env": limits,
        "goal_peak_rss_bytes": GOALS["mp24_peak_rss_bytes"],
    }
    for name in names:
        tree = trees[name]
        stream, out = tmp / f"mp24_{name}.igpt", tmp / f"mp24_{name}.png"
        row: dict[str, Any] = {}
        for step, args in (
            ("compress", ["compress", "--full", str(png), "-o", str(stream)]),
            ("decompress", ["decompress", str(stream), "-o", str(out)]),
        ):
            log(f"  {size[0]}x{size[1]}: {name} {step}")
            run = run_child(
                tree.cli(*args, "--model", str(tree.model), "-q", "-f"), tree, tree.env(limits)
            )
            row[step] = {
                "seconds": run.seconds,
                "cpu_seconds": run.cpu_seconds,
                "peak_rss_bytes": run.peak_rss_bytes,
                "status": run.status,
            }
            if run.status != 0:
                row[step]["error"] = run.stderr_tail.splitlines()[-1:] or ["no message"]
                break
            row[step]["goal_met"] = run.peak_rss_bytes <= GOALS["mp24_peak_rss_bytes"]
        if "error" not in row.get("compress", {}) and "error" not in row.get("decompress", {}):
            row["bytes"] = stream.stat().st_size
            row["bits_per_pixel"] = 8 * row["bytes"] / pixels
        result[name] = row
    if not plan.mp24_release:
        result["release"] = {"skipped": "--mp24-current-only"}
    return result


def _current_commit() -> dict[str, Any]:
    try:
        return {
            "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        }
    except ReleaseError as exc:
        return {"commit": None, "note": str(exc)}


def measure(
    plan: SpeedReleasePlan,
    out: Path,
    model: Path | None = None,
    images: list[Path] | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Every figure of the section, JSON-ready. `model`: the current tree's bundle (None:
    the default); `images`: thumbnail photos (None: the held-out set)."""
    say = log or (lambda message: None)
    started = time.perf_counter()
    fullres_photo = Path(plan.fullres_photo) if plan.fullres_photo else None
    held_out = validation_images() if images is None or fullres_photo is None else []
    photos = images if images is not None else held_out
    if fullres_photo is None:
        found = [p for p in held_out if p.as_posix().endswith(FULLRES_PHOTO)]
        if not found:
            raise FileNotFoundError(f"held-out photo {FULLRES_PHOTO} not found")
        fullres_photo = found[0]
    from igpt_codec.runtime.bundle import DEFAULT_BUNDLE_DIR

    current_model = Path(model or DEFAULT_BUNDLE_DIR).resolve()
    directory = (out / f"release-{plan.release}").resolve()
    full, created = make_worktree(plan.release, directory)
    say(f"release {plan.release}: worktree {directory} ({'made' if created else 'reused'})")
    try:
        trees = {
            "release": Tree(
                "release", directory, directory / "codec" / "models" / "default", "codec"
            ),
            "current": Tree("current", REPO_ROOT, current_model, "igpt_codec"),
        }
        result: dict[str, Any] = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "plan": asdict(plan),
            "goals": GOALS,
            "release_figures_before": RELEASE_FIGURES,
            "load_average_start": load_average(),
            "nice": os.nice(0),
        }
        for name, tree in trees.items():
            result[name] = {
                "root": str(tree.root),
                "model": str(tree.model),
                "fingerprint": _fingerprint(tree.model),
                "code": verify_code(tree),
                **({"commit": full} if name == "release" else _current_commit()),
            }
        result["release"]["worktree_reused"] = not created
        for tree in trees.values():
            compile_tree(tree)
        result["bytecode"] = (
            "compiled ahead in both trees, PYTHONDONTWRITEBYTECODE dropped from the children's "
            "environment: every process reads its bytecode, as an installed package does"
        )
        with tempfile.TemporaryDirectory(prefix="bench_speed_release_") as tmp_name:
            tmp = Path(tmp_name)
            say("thumbnails: decode tokens/s, 1 thread")
            result["thumbnails"] = measure_thumbnails(trees, photos, plan, say)
            say("whole process: cli.py compress + decompress of a thumbnail")
            result["whole_process"] = measure_whole_process(trees, photos[0], plan, tmp, say)
            result["fullres"] = measure_fullres(trees, fullres_photo, plan, tmp, say)
            if plan.mp24:
                result["mp24"] = measure_mp24(trees, fullres_photo, plan, tmp, say)
            else:
                result["mp24"] = {"skipped": "off by default (--mp24): the release takes >1 h"}
        result["load_average_end"] = load_average()
        result["seconds"] = time.perf_counter() - started
        return result
    finally:
        if created and not plan.keep_worktree:
            remove_worktree(directory)


def _s(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _mb(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def markdown(r: dict[str, Any]) -> str:
    """The section's tables: release vs current, medians and ratios."""
    rel, cur = r["release"], r["current"]
    lines = [
        "## Speed against the release (issue 23)",
        "",
        f"Release {rel['commit'][:7]} (bundle {rel['fingerprint']}) against the current tree "
        f"{(cur.get('commit') or '?')[:7]}{' (uncommitted changes)' if cur.get('dirty') else ''}"
        f" (bundle {cur['fingerprint']}), rounds interleaved, medians. "
        f"Load average {r['load_average_start']} at start, {r['load_average_end']} at end; "
        f"nice {r['nice']}.",
        "",
    ]
    f = r["fullres"]
    w, h = f["resize"]
    lines += [
        f"**{w}x{h}** ({Path(f['photo']).name}, {f['rounds']} rounds, default threads "
        f"{f['default_threads']['current']}):",
        "",
        "| | release | current | speed-up | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for step, label in (("compress", "encode (`compress --full`)"), ("decompress", "decode")):
        row = f[step]
        goal = ""
        if "goal_s" in row:
            goal = f"≤ {row['goal_s']:.0f} s: {'met' if row['goal_met'] else 'not met'}"
        lines.append(
            f"| {label} | {_s(row['release']['median_s'])} | {_s(row['current']['median_s'])} "
            f"| {row['speedup']:.2f}x | {goal} |"
        )
    for step, label in (("compress", "encode"), ("decompress", "decode")):
        row = f[step]
        lines.append(
            f"| {label}, CPU seconds | {_s(row['release']['median_cpu_s'])} "
            f"| {_s(row['current']['median_cpu_s'])} | {row['cpu_speedup']:.2f}x | |"
        )
    for step, label in (("compress", "encode"), ("decompress", "decode")):
        row = f[step]
        lines.append(
            f"| {label} peak RSS | {_mb(row['release']['peak_rss_bytes'])} "
            f"| {_mb(row['current']['peak_rss_bytes'])} | | |"
        )
    lines.append(
        f"| bits/pixel | {f['bits_per_pixel']['release']:.3f} | "
        f"{f['bits_per_pixel']['current']:.3f} | | |"
    )
    t = f["threads"]
    lines += [
        "",
        f"CPU time / wall time at {t['threads']} threads ({t['from']}): decode "
        f"{t['decode']['release']:.2f} (release) / {t['decode']['current']:.2f} (current), "
        f"encode {t['encode']['release']:.2f} / {t['encode']['current']:.2f}. "
        f"Decoded pixels the same in both: {f['same_decoded_pixels']}.",
        "",
        f"**Thumbnails** ({r['thumbnails']['side']}x{r['thumbnails']['side']}, 1 thread, "
        f"{r['thumbnails']['rounds']} rounds), decode tokens/s:",
        "",
        "| batch | release | current | ratio | goal | CPU: release | current | ratio |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for batch, row in r["thumbnails"]["decode"].items():
        goal = (
            f"≥ {row['goal_tokens_per_s']:,.0f}: {'met' if row['goal_met'] else 'not met'}"
            if "goal_tokens_per_s" in row
            else ""
        )
        lines.append(
            f"| {batch} | {row['release']['median_tokens_per_s']:,.0f} | "
            f"{row['current']['median_tokens_per_s']:,.0f} | {row['ratio']:.2f}x | {goal} "
            f"| {row['release']['cpu_tokens_per_s']:,.0f} "
            f"| {row['current']['cpu_tokens_per_s']:,.0f} | {row['cpu_ratio']:.2f}x |"
        )
    p = r["whole_process"]
    goal = (
        f" (goal ≤ {p['goal_s']} s: {'met' if p['goal_met'] else 'not met'})"
        if "goal_s" in p
        else ""
    )
    lines += [
        "",
        f"**Whole process** (`compress --size {p['side']} --threads 1` + `decompress`, "
        f"{Path(p['photo']).name}, {p['rounds']} rounds): release {_s(p['release']['median_s'])}"
        f", current {_s(p['current']['median_s'])}, speed-up {p['speedup']:.2f}x{goal}; "
        f"CPU seconds {_s(p['release']['median_cpu_s'])} and {_s(p['current']['median_cpu_s'])}; "
        f"peak RSS compress {_mb(p['current']['compress']['peak_rss_bytes'])}, decompress "
        f"{_mb(p['current']['decompress']['peak_rss_bytes'])} (current).",
        "",
    ]
    m = r["mp24"]
    if "skipped" in m:
        lines.append(f"**24 MP**: skipped ({m['skipped']}).")
    else:
        lines.append(f"**{m['resize'][0]}x{m['resize'][1]}** ({m['megapixels']:.1f} MP), one run:")
        lines.append("")
        for name in TREES:
            row = m.get(name, {})
            if "skipped" in row or not row:
                lines.append(f"- {name}: skipped")
                continue
            parts = []
            for step in ("compress", "decompress"):
                if step in row:
                    s = row[step]
                    text = f"{step} {_s(s['seconds'])}, peak {_mb(s['peak_rss_bytes'])}"
                    parts.append(text + (f" (failed: {s['error'][0]})" if "error" in s else ""))
            lines.append(f"- {name}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"expected a positive WxH, got {text!r}")
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this section (shared with `python -m bench --only speed-release`)."""
    parser.add_argument("--release", default=None, help="release commit (default 1df2fe8)")
    parser.add_argument("--mp24", action="store_true", help="also the 24-megapixel run (long)")
    parser.add_argument(
        "--mp24-size", type=_size, metavar="WxH", help="the large run's size (default 6000x4000)"
    )
    parser.add_argument(
        "--mp24-current-only", action="store_true", help="the large run without the release"
    )
    parser.add_argument("--fullres-photo", type=Path, metavar="FILE", help="default: 045.png")
    parser.add_argument("--fullres-size", type=_size, metavar="WxH", help="default 768x512")
    parser.add_argument("--rounds", type=int, metavar="N", help="768x512 rounds (default 3)")
    parser.add_argument(
        "--keep-worktree", action="store_true", help="keep the release's worktree for a rerun"
    )


def plan_from(args: argparse.Namespace, base: SpeedReleasePlan) -> SpeedReleasePlan:
    changes: dict[str, Any] = {}
    for key, field in (
        ("release", "release"),
        ("fullres_photo", "fullres_photo"),
        ("mp24_size", "mp24_size"),
        ("fullres_size", "fullres_size"),
        ("rounds", "fullres_rounds"),
    ):
        if getattr(args, key, None) is not None:
            value = getattr(args, key)
            changes[field] = str(value) if isinstance(value, Path) else value
    if args.rounds is not None and args.rounds < 1:
        raise ReleaseError("--rounds must be at least 1")
    changes["mp24"] = args.mp24 or base.mp24
    changes["mp24_release"] = base.mp24_release and not args.mp24_current_only
    changes["keep_worktree"] = args.keep_worktree or base.keep_worktree
    return replace(base, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed_release",
        description="Issue 23's speed figures: this tree against a release, one run.",
    )
    parser.add_argument("--model", type=Path, metavar="DIR", help="bundle (default: default)")
    parser.add_argument("--images", type=Path, metavar="DIR", help="thumbnail photos")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="worktree parent")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the result here")
    parser.add_argument("--md", type=Path, metavar="FILE", help="write the tables here")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        plan = plan_from(args, SpeedReleasePlan())
        images = select_images(args.images, None) if args.images else None
        result = measure(plan, args.out, args.model, images, lambda m: print(m, file=sys.stderr))
    except (ReleaseError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=1) + "\n"
    if args.json:
        args.json.write_text(text)
    if args.md:
        args.md.write_text(markdown(result))
    if not args.json:
        print(text)
    print(markdown(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
