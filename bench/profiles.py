"""Issue 9's side-by-side: the exact profile against the float profile, one run, 1 thread.

Three measurements, the two bundles taking turns round after round (the order
flips every round), so load on a shared machine falls on both alike:

(a) encode: the encoder's model time for one N x N image. Exact: the ONE
    whole-sequence call `igpt_codec.pipelines.stream` makes per image. Float: the N²-step token
    loop (`TokenModel.step` at batch 1). Also the whole encoder per image (model,
    tables, range coder), through the pipeline's own per-image functions.
(b) decode: tokens/s over whole images (N² steps with the KV cache) at batch 1 and
    16, through the pipeline's own batch decoder (model step, tables, decode and
    shadow re-encode per row, checks); and the model steps alone on the same tokens,
    so the model's share of the decoder's time is known.
(c) command line: whole-process `python cli.py compress PHOTO --model DIR --threads 1`
    and `decompress`, beside a process that only imports the codec.

What bounds each: the model's share of the time (the rest is Python: tables, coder,
loop), and onnxruntime's own profiler on a separate session per case (exact
encode's whole-sequence call; decode steps at batch 1 and 16 from a cache at half
the image): the time per op type, largest first.

    python -m bench.profiles                      # default exact bundle vs its float parent
    python -m bench.profiles --float DIR --json profiles.json

Why ~520 lines: the profile comparison times the same images through every profile's
encoder and decoder side by side in one process (that is what makes its ratios
meaningful on a noisy machine), so the steps of all profiles live together.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.cli_timing import CLI, IMPORTS_ONLY, run_child
from bench.config import ProfilePlan
from bench.runners import StepRunner, profile_name, random_tokens
from bench.stepbench import bundle_summary
from bench.timing import median
from igpt_codec.api import tokenize
from igpt_codec.core.errors import BundleError
from igpt_codec.core.images import load_image
from igpt_codec.pipelines import stream as pipeline
from igpt_codec.runtime.bundle import Bundle, load_bundle
from igpt_codec.runtime.contract import SOS
from igpt_codec.runtime.session import make_session_options

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOAT_PARENT = REPO_ROOT / "tests" / "data" / "default-float"
"""The float checkpoint the default exact bundle was made from (a version-1 bundle)."""
FLOAT_CACHE = "float_default_bundle"
GOALS = {
    "encode_model_float_over_exact": 3.0,
    "decode_exact_tokens_per_s": {"1": 1300.0, "16": 5000.0},
}
TOP_OPS = 8
Log = Callable[[str], None]


@dataclass(frozen=True)
class FloatBundle:
    """The float bundle to compare with, or None and why."""

    bundle: Bundle | None
    note: str | None
    exported: bool = False


def resolve_float(spec: str, exact: Bundle, out_dir: Path) -> FloatBundle:
    """`none`, a float bundle directory, or `auto`: the default model's float parent,
    exported once into out_dir (needs torch) when `exact` is the shipped default."""
    if spec == "none":
        return FloatBundle(None, "profile comparison skipped (no float bundle)")
    if spec != "auto":
        try:
            bundle = load_bundle(Path(spec))
        except BundleError as exc:
            return FloatBundle(None, f"profile comparison skipped: {exc}")
        if bundle.exact:
            return FloatBundle(None, f"profile comparison skipped: {spec} is not a float bundle")
        return FloatBundle(bundle, None)
    if exact.manifest.get("source", {}).get("fingerprint") != _v1_fingerprint(FLOAT_PARENT):
        return FloatBundle(
            None,
            "profile comparison skipped: --float-model auto knows the float parent of the "
            "default bundle only; pass a float bundle of this model",
        )
    target = out_dir / FLOAT_CACHE
    if target.is_dir():
        try:
            return FloatBundle(load_bundle(target), None)
        except BundleError:
            pass
    try:
        from igpt_codec.export.onnx_export import export_bundle

        out_dir.mkdir(parents=True, exist_ok=True)
        export_bundle(str(FLOAT_PARENT), target, profile="float", force=True)
        return FloatBundle(load_bundle(target), None, exported=True)
    except ImportError as exc:
        return FloatBundle(None, f"profile comparison skipped: the float export needs {exc.name}")
    except Exception as exc:  # the exporter raises many types; the run goes on without it
        return FloatBundle(
            None, f"profile comparison skipped: float export failed ({type(exc).__name__}: {exc})"
        )


def _v1_fingerprint(directory: Path) -> str | None:
    try:
        return json.loads((directory / "manifest.json").read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def _images(paths: list[Path], bundle: Bundle, side: int, count: int) -> list[pipeline.TokenImage]:
    """`count` token images: the photos in turn (repeated when there are fewer)."""
    loaded = [load_image(p) for p in paths[:count]]
    tokens = tokenize(loaded, bundle, side)
    return [tokens[i % len(tokens)] for i in range(count)]


class _Side:
    """One profile's runner, images and records, and its timings."""

    def __init__(self, bundle: Bundle, paths: list[Path], plan: ProfilePlan):
        self.bundle = bundle
        self.name = profile_name(bundle)
        self.runner = StepRunner(bundle, threads=plan.threads)
        self.images = _images(paths, bundle, plan.side, max(plan.batches))
        self.records = [
            e.record for e in pipeline.encode(self.images, bundle, threads=plan.threads)
        ]
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, key: str, clocks: tuple[float, float]) -> None:
        """Record (wall, cpu) seconds of one measurement."""
        self.times.setdefault(key, []).append(clocks[0])
        self.cpu.setdefault(key, []).append(clocks[1])

    def encode_model(self) -> tuple[float, float]:
        """The encoder's model time for the first image: one call, or the token loop."""
        image = self.images[0]
        tokens = image.tokens.astype(np.int64)
        if self.runner.exact:
            clock = _Clock()
            self.runner.whole_sequence(tokens, image.side)
            return clock.read()
        model = self.runner.model
        clock = _Clock()
        state = model.start(1)
        feed = np.array([SOS], np.int64)
        for t in range(tokens.size):
            _, state = model.step(feed, state)
            feed = tokens[t : t + 1]
        return clock.read()

    def encode_image(self) -> tuple[float, float]:
        """The whole encoder for the first image, through the pipeline's own functions."""
        counter = pipeline._Counter(None, None)
        image = self.images[0]
        clock = _Clock()
        if self.runner.exact:
            encoded = pipeline._encode_exact(self.runner.model, self.bundle, image, counter)
        else:
            (encoded,) = pipeline._encode_float(self.runner.model, self.bundle, [image], counter)
        clocks = clock.read()
        if encoded.record.payload != self.records[0].payload:
            raise AssertionError(f"{self.name}: the timed encode gave another payload")
        return clocks

    def decode(self, batch: int) -> tuple[float, float]:
        """The pipeline's batch decoder on `batch` records; checks the tokens."""
        records = self.records[:batch]
        counter = pipeline._Counter(None, None)
        clock = _Clock()
        decoded = pipeline._decode_batch(
            self.runner.model, self.bundle, list(range(batch)), records, counter
        )
        clocks = clock.read()
        for got, want in zip(decoded, self.images, strict=False):
            if not np.array_equal(got.tokens, want.tokens):
                raise AssertionError(f"{self.name}: decoded tokens differ at batch {batch}")
        return clocks

    def decode_model(self, batch: int) -> tuple[float, float]:
        """The decoder's model steps alone (same tokens, no tables or coder)."""
        tokens = np.stack([image.tokens.astype(np.int64) for image in self.images[:batch]])
        order = self.runner.positions(self.images[0].side)
        state = self.runner.start(batch)
        feed = np.full(batch, SOS, np.int64)
        clock = _Clock()
        for t in range(tokens.shape[1]):
            _, state = self.runner.model_step(feed, state, int(order[t]))
            feed = tokens[:, t]
        return clock.read()


class _Clock:
    """Wall and CPU seconds since creation. With 1 intra-op thread onnxruntime computes on
    the calling thread, so the process's CPU time is the work itself, without the time
    other processes on a shared machine took from it (the wall figure includes that)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _stats(side: _Side, key: str) -> dict[str, Any]:
    return {
        "median_s": median(side.times[key]),
        "cpu_median_s": median(side.cpu[key]),
        "runs_s": side.times[key],
    }


def _op_table(trace: Path) -> dict[str, Any]:
    """onnxruntime profile JSON -> microseconds per op type, largest first, and shares."""
    events = json.loads(trace.read_text())
    per_op: dict[str, float] = {}
    runs = 0.0
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(event.get("dur", 0))
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += float(event.get("dur", 0))
    kernels = sum(per_op.values())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {
        "model_run_us": runs,
        "kernel_us": kernels,
        "kernel_share_of_run": kernels / runs if runs else None,
        "op_types": [
            {"op": op, "us": us, "share": us / kernels if kernels else 0.0} for op, us in top
        ],
        "nodes": sum(
            1
            for e in events
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
        ),
    }


def op_profiles(bundle: Bundle, plan: ProfilePlan, tmp: Path) -> dict[str, Any]:
    """onnxruntime's profiler per case, a fresh session each: which op types take the time."""
    cases: dict[str, Callable[[StepRunner], None]] = {}
    positions = plan.side * plan.side
    past = positions // 2
    rng = np.random.default_rng(5)

    def steps(batch: int) -> Callable[[StepRunner], None]:
        def go(runner: StepRunner) -> None:
            state = runner.synthetic_state(batch, past, seed=3)
            where = int(runner.positions(plan.side)[past])
            for _ in range(plan.profile_steps):
                tokens = random_tokens(rng, batch)
                _, after = runner.model_step(tokens, state, where)
                del after
                state.cache.length = past

        return go

    if bundle.exact:
        cases["encode_whole_sequence"] = lambda runner: runner.whole_sequence(
            random_tokens(rng, positions), plan.side
        )
    for batch in plan.batches:
        cases[f"decode_step_batch{batch}"] = steps(batch)
    found = {}
    for name, work in cases.items():
        runner = StepRunner(bundle, threads=plan.threads)
        options = make_session_options(plan.threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp / f"{profile_name(bundle)}_{name}")
        runner.model.session = ort.InferenceSession(
            str(bundle.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        work(runner)
        trace = Path(runner.model.session.end_profiling())
        table = _op_table(trace)
        table["op_types"] = table["op_types"][:TOP_OPS]
        table["what"] = (
            "one whole-sequence call"
            if name.startswith("encode")
            else f"{plan.profile_steps} decoder steps at past {past}"
        )
        found[name] = table
    return found


def time_cli(sides: dict[str, _Side], photo: Path, plan: ProfilePlan, tmp: Path) -> dict:
    """Whole-process compress and decompress per profile, interleaved, plus imports."""
    times: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    peaks: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    names = list(sides)
    for r in range(plan.cli_runs):
        seconds, status, _, tail, cpu_s = run_child([sys.executable, "-c", IMPORTS_ONLY])
        times.setdefault("imports", {}).setdefault("python", []).append(seconds)
        cpu.setdefault("imports", {}).setdefault("python", []).append(cpu_s)
        for name in names if r % 2 == 0 else names[::-1]:
            bundle = sides[name].bundle
            stream, png = tmp / f"{name}.igpt", tmp / f"{name}.png"
            common = ["--model", str(bundle.path), "--threads", str(plan.threads), "-q", "-f"]
            commands = {
                "compress": [str(photo), "-o", str(stream), "--size", str(plan.side), *common],
                "decompress": [str(stream), "-o", str(png), *common],
            }
            for command, args in commands.items():
                seconds, status, peak, tail, cpu_s = run_child(
                    [sys.executable, str(CLI), command, *args]
                )
                if status != 0:
                    raise RuntimeError(f"cli.py {command} ({name}) exited {status}: {tail}")
                times.setdefault(command, {}).setdefault(name, []).append(seconds)
                cpu.setdefault(command, {}).setdefault(name, []).append(cpu_s)
                entry = peaks.setdefault(command, {})
                entry[name] = max(entry.get(name, 0), peak)
            sizes[name] = stream.stat().st_size
    result: dict[str, Any] = {
        "photo": str(photo),
        "runs": plan.cli_runs,
        "threads": plan.threads,
        "imports_median_s": median(times["imports"]["python"]),
        "imports_cpu_median_s": median(cpu["imports"]["python"]),
        "file_bytes": sizes,
    }
    for command in ("compress", "decompress"):
        row: dict[str, Any] = {
            name: {
                "median_s": median(times[command][name]),
                "cpu_median_s": median(cpu[command][name]),
                "runs_s": times[command][name],
                "peak_rss_bytes": peaks[command][name],
            }
            for name in names
        }
        if "exact" in row and "float" in row:
            row["float_over_exact"] = row["float"]["median_s"] / row["exact"]["median_s"]
            row["cpu_float_over_exact"] = (
                row["float"]["cpu_median_s"] / row["exact"]["cpu_median_s"]
            )
        result[command] = row
    return result


def compare(
    exact: Bundle,
    float_bundle: Bundle,
    photos: list[Path],
    plan: ProfilePlan | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """The three side-by-side measurements and the op-type profiles; JSON-ready."""
    plan = plan or ProfilePlan()
    say = log or (lambda message: None)
    started = time.perf_counter()
    sides = {"exact": _Side(exact, photos, plan), "float": _Side(float_bundle, photos, plan)}
    tokens = plan.side * plan.side
    names = list(sides)
    for r in range(plan.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            side = sides[name]
            side.add("encode_model", side.encode_model())
            side.add("encode_image", side.encode_image())
            for batch in plan.batches:
                side.add(f"decode_{batch}", side.decode(batch))
                side.add(f"decode_model_{batch}", side.decode_model(batch))
        say(
            f"  round {r + 1}/{plan.rounds}: encode model exact "
            f"{1e3 * sides['exact'].times['encode_model'][-1]:.0f} ms, float "
            f"{1e3 * sides['float'].times['encode_model'][-1]:.0f} ms"
        )
    result: dict[str, Any] = {
        "threads": plan.threads,
        "side": plan.side,
        "tokens_per_image": tokens,
        "rounds": plan.rounds,
        "profile_steps": plan.profile_steps,
        "photos": [str(p) for p in photos[: max(plan.batches)]],
        "bundles": {name: bundle_summary(s.bundle) for name, s in sides.items()},
        "goals": GOALS,
    }
    enc = {name: _stats(s, "encode_model") for name, s in sides.items()}
    ratio = enc["float"]["median_s"] / enc["exact"]["median_s"]
    result["encode_model"] = {
        **enc,
        "float_over_exact": ratio,
        "cpu_float_over_exact": enc["float"]["cpu_median_s"] / enc["exact"]["cpu_median_s"],
        "goal_met": ratio >= GOALS["encode_model_float_over_exact"],
        "goal_met_cpu": enc["float"]["cpu_median_s"] / enc["exact"]["cpu_median_s"]
        >= GOALS["encode_model_float_over_exact"],
        "what": "exact: one whole-sequence call; float: the token loop, batch 1 (model only)",
    }
    image = {name: _stats(s, "encode_image") for name, s in sides.items()}
    result["encode_image"] = {
        **image,
        "float_over_exact": image["float"]["median_s"] / image["exact"]["median_s"],
        "cpu_float_over_exact": image["float"]["cpu_median_s"] / image["exact"]["cpu_median_s"],
        "model_share": {n: enc[n]["median_s"] / image[n]["median_s"] for n in sides},
        "what": "the pipeline's per-image encoder: model, tables, range coder, record",
    }
    decode: dict[str, Any] = {}
    for batch in plan.batches:
        row: dict[str, Any] = {}
        for name, s in sides.items():
            total = median(s.times[f"decode_{batch}"])
            model = median(s.times[f"decode_model_{batch}"])
            total_cpu = median(s.cpu[f"decode_{batch}"])
            model_cpu = median(s.cpu[f"decode_model_{batch}"])
            row[name] = {
                "median_tokens_per_s": batch * tokens / total,
                "cpu_tokens_per_s": batch * tokens / total_cpu,
                "model_only_tokens_per_s": batch * tokens / model,
                "model_only_cpu_tokens_per_s": batch * tokens / model_cpu,
                "model_share": model / total,
                "model_share_cpu": model_cpu / total_cpu,
                "runs_s": s.times[f"decode_{batch}"],
            }
        row["exact_over_float"] = (
            row["exact"]["median_tokens_per_s"] / row["float"]["median_tokens_per_s"]
        )
        row["cpu_exact_over_float"] = (
            row["exact"]["cpu_tokens_per_s"] / row["float"]["cpu_tokens_per_s"]
        )
        goal = GOALS["decode_exact_tokens_per_s"].get(str(batch))
        if goal is not None:
            row["goal_tokens_per_s"] = goal
            row["goal_met"] = row["exact"]["median_tokens_per_s"] >= goal
            row["goal_met_cpu"] = row["exact"]["cpu_tokens_per_s"] >= goal
        decode[str(batch)] = row
    result["decode"] = decode
    with tempfile.TemporaryDirectory(prefix="bench_profiles_") as tmp:
        say("  command line, interleaved")
        result["cli"] = time_cli(sides, photos[0], plan, Path(tmp))
        say("  onnxruntime op profiles")
        result["op_profiles"] = {
            name: op_profiles(s.bundle, plan, Path(tmp)) for name, s in sides.items()
        }
    result["seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    from bench.data import select_images

    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("--exact", type=Path, default=None, help="exact bundle (default: shipped)")
    parser.add_argument(
        "--float",
        dest="float_model",
        default="auto",
        help="float bundle DIR, or auto: export the default model's float parent (needs torch)",
    )
    parser.add_argument("--images", type=Path, default=None, help="photos (default: held-out)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=ProfilePlan.rounds)
    parser.add_argument("--cli-runs", type=int, default=ProfilePlan.cli_runs)
    parser.add_argument("--quick", action="store_true", help="one round, one CLI run")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="cache for auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    exact = load_bundle(args.exact)
    if not exact.exact:
        parser.error(f"{exact.path} is not an exact bundle")
    resolved = resolve_float(args.float_model, exact, args.out)
    if resolved.bundle is None:
        print(f"error: {resolved.note}", file=sys.stderr)
        return 1
    plan = (
        ProfilePlan(side=args.size, rounds=1, cli_runs=1, profile_steps=8)
        if args.quick
        else ProfilePlan(side=args.size, rounds=args.rounds, cli_runs=args.cli_runs)
    )
    photos = select_images(args.images, max(plan.batches))
    result = compare(exact, resolved.bundle, photos, plan, log=lambda m: print(m, file=sys.stderr))
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(summary_text(result))
    return 0


def summary_text(r: dict[str, Any]) -> str:
    """A few lines for the terminal (the Markdown report has the tables)."""
    e = r["encode_model"]
    lines = [
        f"encoder model time, one {r['side']}x{r['side']} image: exact "
        f"{1e3 * e['exact']['median_s']:.1f} ms, float {1e3 * e['float']['median_s']:.1f} ms "
        f"(float/exact {e['float_over_exact']:.2f}x; goal >= 3x: {e['goal_met']})",
    ]
    for batch, row in r["decode"].items():
        lines.append(
            f"decode batch {batch}: exact {row['exact']['median_tokens_per_s']:,.0f} tok/s, "
            f"float {row['float']['median_tokens_per_s']:,.0f} tok/s "
            f"(exact/float {row['exact_over_float']:.2f}; goal met: {row.get('goal_met')})"
        )
    for command in ("compress", "decompress"):
        c = r["cli"][command]
        lines.append(
            f"cli {command}: exact {c['exact']['median_s']:.2f} s, float "
            f"{c['float']['median_s']:.2f} s (imports alone {r['cli']['imports_median_s']:.2f} s)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
