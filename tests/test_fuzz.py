"""The fuzz campaign of issue 12 (tests/harness/fuzz.py): a short run, and proof that it can fail.

The short run goes through the container and the API with the shipped default model
(small sides, so model time stays small) and must show no other exception, hang or
memory outcome, and no outcome its case did not allow. The harness tests inject a
crashing, hanging, memory-hungry and dying reader and check that each is counted.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc

import pytest

import igpt_codec.format as stream_format
from tests.harness import fuzz

SHORT_WEIGHTS = {"random": 0.6, "field": 0.28, "recrc": 0.12}
"""Fewer recomputed-CRC cases than the default (0.3): they cost model time."""


@pytest.fixture(scope="module")
def ctx() -> fuzz.Context:
    with fuzz.hermetic_search_path():
        return fuzz.build_context()


def test_short_campaign_has_no_failures() -> None:
    started = time.monotonic()
    report = fuzz.run_campaign(fuzz.Options(seed=7, cases=2000, weights=SHORT_WEIGHTS))
    summary = report.to_json()
    assert summary["cases"] == 2000
    assert report.failures == 0, report.table(generators=True)
    assert not report.unexpected, report.table(generators=True)
    assert report.worker_starts == 1
    counts = summary["counts"]
    assert counts["clean_error"] > 1800
    assert counts["identical"] > 0  # ANCILLARY on a known kind, skippable records inserted
    assert counts["forged_valid"] > 0  # width/mode forgeries, records reordered
    assert report.model_cases > 50  # cases the container accepted went on to the model
    assert set(summary["by_family"]) == set(fuzz.FAMILIES)
    for error in ("ChecksumError", "PayloadError", "TokenChecksumError", "DecodeLimitError"):
        assert summary["errors"].get(error), error
    assert summary["errors"].get("ModelNotFoundError") or summary["errors"].get(
        "ModelMismatchError"
    )
    assert time.monotonic() - started < 120


def test_cases_are_deterministic(ctx: fuzz.Context) -> None:
    weights = fuzz.DEFAULT_WEIGHTS
    first = [fuzz.make_case(ctx, 3, i, weights) for i in range(200)]
    again = [fuzz.make_case(ctx, 3, i, weights) for i in range(200)]
    other = [fuzz.make_case(ctx, 4, i, weights) for i in range(200)]
    assert [c.data for c in first] == [c.data for c in again]
    assert [c.data for c in first] != [c.data for c in other]
    assert all(c.data not in ctx.streams for c in first if c.generator != "limits")


def test_reframing_recomputes_every_crc(ctx: fuzz.Context) -> None:
    """build_stream, written from the documented layout, makes streams the reader takes."""
    base = ctx.by_name["rgb4x3"]
    header, frames, crcs = base.layout
    assert len(frames) == 3
    assert fuzz.build_stream(header, frames) == base.data
    frames = [frames[2], frames[0]]
    records = stream_format.unpack_stream(fuzz.build_stream(header, frames))
    assert [r.payload for r in records] == [fuzz.Thumb.parse(f.body).payload for f in frames]
    with pytest.raises(stream_format.ChecksumError):
        stream_format.unpack_stream(fuzz.build_stream(header, frames, stale=crcs))
    with pytest.raises(stream_format.MissingEndMarkerError):
        stream_format.unpack_stream(fuzz.build_stream(header, frames, final=False))


def test_a_crashing_reader_is_counted_as_other_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The harness must be able to fail: a reader that raises a non-codec exception."""

    def crash(*args: object, **kwargs: object) -> None:
        raise ValueError("injected reader bug")

    monkeypatch.setattr(stream_format, "unpack_stream", crash)
    monkeypatch.setattr(stream_format, "iter_records", crash)
    report = fuzz.run_campaign(fuzz.Options(seed=5, cases=40, isolate=False))
    assert report.counts["other_exception"] == 40
    assert report.failures == 40
    assert "injected reader bug" in report.examples[0]["detail"]
    assert report.examples[0]["rerun"].endswith("--seed 5 --case 0")
    assert fuzz.main(["--seed", "5", "--cases", "10", "--in-process"]) == 1


def test_an_unclean_codec_error_is_counted_as_other_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def multiline(*args: object, **kwargs: object) -> None:
        raise stream_format.TruncatedError("first line\nsecond line")

    monkeypatch.setattr(stream_format, "unpack_stream", multiline)
    monkeypatch.setattr(stream_format, "iter_records", multiline)
    report = fuzz.run_campaign(fuzz.Options(seed=5, cases=10, isolate=False))
    assert report.counts["other_exception"] == 10


def _inject_faults() -> None:
    """worker_init for the test below: cases 0-3 hang, allocate, raise, kill the worker."""
    original = fuzz.read_container

    def faulty(case: fuzz.Case) -> list[object]:
        if case.index == 0:
            time.sleep(3600)
        if case.index == 1:
            hog = bytearray(48 << 20)
            del hog
        if case.index == 2:
            raise RuntimeError("injected crash")
        if case.index == 3:
            os._exit(3)
        return original(case)

    fuzz.read_container = faulty


def test_worker_watchdog_counts_hang_memory_crash_and_death() -> None:
    options = fuzz.Options(
        seed=1,
        cases=6,
        timeout=3.0,
        memory_bound=16 << 20,
        worker_init=f"{__name__}:_inject_faults",
    )
    report = fuzz.run_campaign(options)
    outcomes = {example["case"]: example["outcome"] for example in report.examples}
    assert outcomes[0] == "hang"
    assert outcomes[1] == "memory"
    assert outcomes[2] == "other_exception"
    assert outcomes[3] == "other_exception"
    details = {example["case"]: example["detail"] for example in report.examples}
    assert "injected crash" in details[2]
    assert "exit code 3" in details[3]
    assert report.failures == 4
    assert report.worker_starts == 3  # restarted after the hang and after the death
    assert sum(report.counts.values()) == 6


def test_forged_full_layouts_are_refused_or_decoded_within_the_work_budget(
    ctx: fuzz.Context,
) -> None:
    """Issue 26: forged windows per segment, context rows, width and height (segments
    and token checks made to match) must give a one-line error or the all-zero image,
    each case within about the work budget, never a hang or a blow-up."""
    rng = random.Random(26)
    outcomes: dict[str, int] = {}
    base = ctx.full[0]
    header, frames, _ = base.layout
    started = time.monotonic()
    tracemalloc.start()
    for index in range(60):
        forgery = fuzz._e_full_layout(rng, header, frames, ctx)
        data = fuzz.build_stream(forgery.header, forgery.frames)
        case = fuzz.Case(index, "recrc", "full_layout", base.name, data, forgery.expect, work=True)
        case_started = time.monotonic()
        result = fuzz.classify(ctx, case, fuzz.MEMORY_BOUND)
        assert result["outcome"] in forgery.expect, (result, fuzz.parse_stream(data)[1][:1])
        assert time.monotonic() - case_started < 10
        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1
    tracemalloc.stop()
    assert outcomes.get("clean_error", 0) > 10 and outcomes.get("forged_valid", 0) > 3, outcomes
    assert time.monotonic() - started < 120


def test_forged_features_and_band_checks_are_refused_or_decoded(ctx: fuzz.Context) -> None:
    """The kind-3 features byte (0, reserved bits, BAND_CHECKS without CHAIN, added or
    dropped) and the band checks (changed, dropped, added), and valid all-zero images with
    every band check made from SPEC.md: one-line errors from the header, the band checks,
    the canonical payload or the token check, or the all-zero image; never anything else."""
    rng = random.Random(27)
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    started = time.monotonic()
    tracemalloc.start()
    for index in range(60):
        base = rng.choice(ctx.full)
        header, frames, _ = base.layout
        forgery = fuzz._e_full_features(rng, header, frames, ctx)
        data = fuzz.build_stream(forgery.header, forgery.frames)
        case = fuzz.Case(
            index, "recrc", "full_features", base.name, data, forgery.expect, work=forgery.work
        )
        result = fuzz.classify(ctx, case, fuzz.MEMORY_BOUND)
        assert result["outcome"] in forgery.expect, (result, fuzz.parse_stream(data)[1][:2])
        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1
        if result["error"]:
            errors[result["error"]] = errors.get(result["error"], 0) + 1
    tracemalloc.stop()
    assert outcomes.get("forged_valid", 0) > 0, outcomes  # all-zero images, checks right
    assert errors.get("InvalidFieldError", 0) > 5 and errors.get("TokenChecksumError", 0) > 5
    assert time.monotonic() - started < 120
