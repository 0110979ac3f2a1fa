"""`python -m bench --only speed-release` on tiny inputs: the release's worktree is made
and removed, both codebases run (the release its own code and bundle, today's tree the
tiny bundle), and results.json has every figure issue 23 asks for; a release that cannot
be checked out is a one-line error, not a traceback.

Sizes are tiny (a 24x16 "full-resolution" photo, 8x8 thumbnails, a 32x24 stand-in for
24 MP) so the test checks the harness, not speed.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import config as presets
from bench.__main__ import main
from bench.config import SpeedReleasePlan
from bench.run import RESULTS_JSON, RESULTS_MD, run_only
from bench.speed_release import REPO_ROOT, TREES

PLAN = SpeedReleasePlan(
    fullres_size=(24, 16),
    fullres_rounds=1,
    thumb_side=8,
    thumb_batches=(2, 1),
    thumb_rounds=1,
    cli_rounds=1,
    mp24=True,
    mp24_size=(32, 24),
)


def _has_release() -> bool:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{PLAN.release}^{{commit}}"],
        cwd=REPO_ROOT,
        capture_output=True,
    )
    return done.returncode == 0


def _photos(directory: Path) -> Path:
    directory.mkdir()
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:40, 0:56]
    for i in range(2):
        base = np.stack([x * 4 + 50 * i, y * 6, (x + y) * 2], axis=-1)
        pixels = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / f"photo_{i}.png")
    return directory


@pytest.fixture(scope="module")
def section(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    if not _has_release():
        pytest.skip(f"release {PLAN.release} is not in this clone's history")
    root = tmp_path_factory.mktemp("speed_release")
    images = _photos(root / "images")
    plan = replace(PLAN, fullres_photo=str(images / "photo_0.png"))
    config = presets.quick(images=images, out=root / "out", model=tiny_bundle, speed_release=plan)
    run_only(config, "speed-release", log=lambda message: None)
    assert (config.out / RESULTS_MD).read_text().startswith("## Speed against the release")
    return json.loads((config.out / RESULTS_JSON).read_text()), config.out


def test_section_has_every_figure(section: tuple[dict, Path], tiny_bundle: Path) -> None:
    results, out = section
    r = results["speed_release"]
    assert r["release"]["commit"].startswith(PLAN.release)
    # the release ran its own code and its own default bundle, today's tree the tiny bundle
    release_root = Path(r["release"]["root"])
    assert Path(r["release"]["code"]["codec"]).is_relative_to(release_root)
    assert Path(r["release"]["code"]["format"]).is_relative_to(release_root)
    assert r["release"]["code"]["igpt_codec loaded"] == "False"
    assert r["release"]["model"] == str(release_root / "codec" / "models" / "default")
    assert r["current"]["model"] == str(tiny_bundle.resolve())
    assert r["current"]["fingerprint"] != r["release"]["fingerprint"]
    assert r["thumbnails"]["fingerprints"]["current"] == r["current"]["fingerprint"]
    assert r["thumbnails"]["fingerprints"]["release"] == r["release"]["fingerprint"]
    assert not release_root.exists()  # made by the run, so removed after it

    full = r["fullres"]
    for step in ("compress", "decompress"):
        for name in TREES:
            row = full[step][name]
            assert row["median_s"] > 0 and row["peak_rss_bytes"] > 10 * 2**20
            assert row["cpu_over_wall"] > 0
        assert full[step]["speedup"] == pytest.approx(
            full[step]["release"]["median_s"] / full[step]["current"]["median_s"]
        )
        assert "goal_s" not in full[step]  # the goals are for 768x512 only
    assert full["same_decoded_pixels"]
    assert full["threads"]["threads"] == 2 and set(full["threads"]["decode"]) == set(TREES)
    thumbs = r["thumbnails"]["decode"]
    assert set(thumbs) == {"2", "1"}
    for row in thumbs.values():
        assert row["release"]["median_tokens_per_s"] > 0 < row["current"]["median_tokens_per_s"]
    whole = r["whole_process"]
    for name in TREES:
        assert whole[name]["median_s"] == pytest.approx(
            whole[name]["compress"]["median_s"] + whole[name]["decompress"]["median_s"]
        )
    assert whole["same_decoded_pixels"]
    mp24 = r["mp24"]
    for name in TREES:
        assert mp24[name]["decompress"]["status"] == 0, mp24[name]
        assert mp24[name]["decompress"]["peak_rss_bytes"] > 0
    assert results["timings_s"]["speed_release"] > 0
    assert not list(out.glob("release-*"))


def test_release_that_cannot_be_checked_out_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _photos(tmp_path / "images")
    argv = ["--only", "speed-release", "--out", str(tmp_path / "out"), "--images", str(images)]
    argv += ["--fullres-photo", str(images / "photo_0.png")]
    assert main([*argv, "--release", "0123456789abcdef0123"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: cannot make a worktree of release 0123456789abcdef0123: unknown commit"
    if _has_release():  # a folder in the way is not silently replaced
        (tmp_path / "out" / f"release-{PLAN.release}").mkdir(parents=True)
        assert main(argv) == 1
        assert "exists and is not a worktree" in capsys.readouterr().err
    assert not (tmp_path / "out" / RESULTS_JSON).exists()


FORKS_AND_FILLS = """
import os, time
pid = os.fork()
if pid == 0:
    block = bytearray(200 << 20)  # touched: 200 MiB resident in the worker alone
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(0.5)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_peak_memory_counts_forked_workers() -> None:
    """A command whose worker process holds 200 MiB while the command itself stays small:
    the peak must count the worker (the chains' workers are forked processes)."""
    import sys

    from bench.cli_timing import run_child

    _, status, peak, _, _ = run_child([sys.executable, "-c", FORKS_AND_FILLS])
    assert status == 0
    assert peak >= 200 << 20
