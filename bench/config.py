"""How much work each benchmark section does, for a full run and for `--quick`.

Kept apart from argument parsing so the test can shrink a quick run further
(fewer coder symbols, smaller copy for the bandwidth probe) without going
through the command line, and so every knob that changes a number is recorded
in results.json next to the number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StepPlan:
    """Sampled step timing for one bundle: which batches, threads, past lengths, how many steps.

    Each (batch, threads, past length) cell runs `warmup` untimed steps and then
    `steps_for(batch)` timed ones from the same synthetic KV cache.
    """

    batches: tuple[int, ...]
    threads: tuple[int, ...]
    past_samples: int
    steps: dict[int, int]
    warmup: int = 1
    fixed_past: tuple[int, ...] | None = None
    """Explicit past lengths instead of `past_samples` evenly spaced ones (quick iGPT-S probe)."""
    whole_runs: int = 3
    """Exact bundles: timed whole-sequence encoder calls (one image each) per thread count."""

    def steps_for(self, batch: int) -> int:
        return self.steps.get(batch, min(self.steps.values()))


@dataclass(frozen=True)
class ProfilePlan:
    """The exact-vs-float comparison (bench.profiles): image side, rounds, batches, CLI runs."""

    side: int = 32
    rounds: int = 5
    batches: tuple[int, ...] = (1, 16)
    cli_runs: int = 3
    profile_steps: int = 32
    """Decoder steps per onnxruntime profiler trace."""
    threads: int = 1


@dataclass(frozen=True)
class SpeedReleasePlan:
    """Issue 23's side-by-side section (bench.speed_release): the release to compare with,
    rounds per measurement, the sizes; `python -m bench --only speed-release` runs it."""

    release: str = "1df2fe8"
    fullres_photo: str | None = None
    """The 768x512 and 24 MP source photo (None: held-out wikipedia-photos/045.png)."""
    fullres_size: tuple[int, int] = (768, 512)
    fullres_rounds: int = 3
    thumb_side: int = 32
    thumb_batches: tuple[int, ...] = (16, 1)
    thumb_rounds: int = 5
    cli_rounds: int = 5
    ratio_threads: int = 2
    """CPU time / wall time is reported at this many threads."""
    mp24: bool = False
    mp24_size: tuple[int, int] = (6000, 4000)
    mp24_release: bool = True
    keep_worktree: bool = False


SIZE_TABLE = (8, 16, 24, 28, 32)
"""Issue 10's --size table."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs; `full()` and `quick()` are the two presets."""

    images: Path | None
    limit: int | None
    size: int
    model: Path | None
    out: Path
    igpt_s: str
    quick: bool
    threads: int
    """onnxruntime intra-op threads for the compression section (end-to-end API calls)."""
    default_steps: StepPlan
    igpt_s_steps: StepPlan
    cli_runs: int
    coder_symbols: int
    coder_runs: int
    bandwidth_mib: int
    matmul_n: int
    probe_repeats: int
    float_model: str = "auto"
    """Float bundle for the profile comparison: DIR, auto (the default model's float
    parent, exported into --out; needs torch) or none."""
    profile_plan: ProfilePlan = ProfilePlan()
    size_table: tuple[int, ...] = SIZE_TABLE
    fullres_photos: int = 3
    """Photos of the run coded at full resolution (each takes minutes on one core)."""
    fullres_crop: tuple[int, int] | None = None
    """Code only each photo's top-left crop of this size (the quick run)."""
    fullres_threads: tuple[int, ...] = (1, 2)
    speed_release: SpeedReleasePlan = SpeedReleasePlan()

    def with_(self, **changes: Any) -> BenchConfig:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("images", "model", "out"):
            data[key] = None if data[key] is None else str(data[key])
        for plan in ("default_steps", "igpt_s_steps"):
            data[plan]["steps"] = {str(k): v for k, v in data[plan]["steps"].items()}
        return data


QUICK_IMAGES = 3


def full(**overrides: Any) -> BenchConfig:
    """The default run: every image, every batch and thread count, medians of several runs."""
    base = BenchConfig(
        images=None,
        limit=None,
        size=32,
        model=None,
        out=Path("bench_out"),
        igpt_s="auto",
        quick=False,
        threads=1,
        default_steps=StepPlan(
            batches=(1, 8, 32), threads=(1, 2), past_samples=5, steps={1: 32, 8: 32, 32: 32}
        ),
        # ~29 / 95 / 390 ms per step at batch 1 / 8 / 32 (FINDINGS.md): fewer steps at
        # larger batches keep the iGPT-S grid near two minutes on two cores.
        igpt_s_steps=StepPlan(
            batches=(1, 8, 32),
            threads=(1, 2),
            past_samples=5,
            steps={1: 24, 8: 8, 32: 4},
            whole_runs=1,
        ),
        cli_runs=3,
        coder_symbols=100_000,
        coder_runs=3,
        bandwidth_mib=256,
        matmul_n=1024,
        probe_repeats=5,
    )
    return base.with_(**overrides)


def quick(**overrides: Any) -> BenchConfig:
    """About a minute: a few images, one repeat, iGPT-S only as one tiny probe if asked for."""
    base = full().with_(
        limit=QUICK_IMAGES,
        igpt_s="none",
        quick=True,
        fullres_photos=1,
        fullres_crop=(40, 36),
        fullres_threads=(1,),
        default_steps=StepPlan(
            batches=(1, 8, 32), threads=(1, 2), past_samples=3, steps={1: 8, 8: 8, 32: 4}
        ),
        igpt_s_steps=StepPlan(
            batches=(1,),
            threads=(1,),
            past_samples=1,
            steps={1: 6},
            fixed_past=(512,),
            whole_runs=1,
        ),
        cli_runs=1,
        coder_symbols=20_000,
        coder_runs=1,
        bandwidth_mib=64,
        probe_repeats=3,
        profile_plan=ProfilePlan(rounds=1, cli_runs=1, profile_steps=8),
        speed_release=SpeedReleasePlan(fullres_rounds=1, thumb_rounds=2, cli_rounds=2),
    )
    return base.with_(**overrides)
