"""Write the golden streams once: python tests/golden/make_golden.py (refuses to overwrite).

Golden files are the format's promise made concrete: streams written by one version,
committed with the tokens they hold, and decoded by every later test run
(tests/test_golden.py). Never regenerate an existing file to make a test pass: a change
that cannot decode them breaks files that users already have.

Two models: `model/`, a frozen tiny exact bundle (random ImageGPT, 32 wide, 2 layers) that
exists only for these files and never changes, and the shipped default bundle of the day
(its fingerprint is in expected.json). When the shipped default is replaced, copy the old
bundle into models/<fingerprint>/ first, so its golden files keep decoding.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from igpt_codec import api  # noqa: E402
from igpt_codec.format.container import pack_stream, unpack_stream  # noqa: E402
from igpt_codec.runtime.bundle import load_bundle  # noqa: E402

SAMPLE = ROOT / "samples" / "bsds500_val_101085.jpg"
PARITY = sorted((ROOT / "export" / "data" / "parity").glob("*.png"))


def images() -> dict[str, Image.Image]:
    with Image.open(SAMPLE) as sample:
        photo = sample.convert("RGB")
    with Image.open(PARITY[0]) as other:
        second = other.convert("RGB")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    return {
        "photo": photo,
        "grey": photo.convert("L"),
        "alpha": rgba,
        "palette": second.quantize(64),
        "second": second,
        "wide": photo.resize((1100, 40)),
        **synthetic(),
    }


def synthetic() -> dict[str, Image.Image]:
    """Images a classical file codes better than the model (issue 28: kinds 5 and 6)."""
    from bench.synthetic import pixel_art, stripes_and_checks, text_page

    return {
        "stripes": Image.fromarray(stripes_and_checks(12)),
        "sprites": Image.fromarray(pixel_art(10)),
        "text": Image.fromarray(text_page(1, 11, ())),
    }


@contextlib.contextmanager
def without_webp() -> Iterator[None]:
    """What a Pillow built without WebP writes: the PNG record."""
    from igpt_codec.pipelines import classical

    real = classical.features.check
    classical.features.check = lambda name: name != "webp" and real(name)
    try:
        yield
    finally:
        classical.features.check = real


@contextlib.contextmanager
def model_coded() -> Iterator[None]:
    """The model's record even where a classical file would be smaller (the frozen tiny
    model codes photos worse than PNG, and a golden file must hold kinds 3 and 4)."""
    from igpt_codec.pipelines import classical

    real = classical.keep_smaller  # the stream dispatch imports it at each full image
    classical.keep_smaller = lambda encoded, *_args: encoded
    try:
        yield
    finally:
        classical.keep_smaller = real


@contextlib.contextmanager
def match_coded() -> Iterator[None]:
    """Coding 3 (the longer-reach levels, issue 28) whichever of codings 2 and 3 is smaller,
    and the model's record whatever a classical file would cost: a golden file must pin
    coding 3's every level, under the frozen tiny model too (where coding 2 may win)."""
    from igpt_codec.format.records import CODING_MATCH
    from igpt_codec.pipelines import stream

    real = stream.FULL_WRITER_CODINGS
    stream.FULL_WRITER_CODINGS = (CODING_MATCH,)
    try:
        with model_coded():
            yield
    finally:
        stream.FULL_WRITER_CODINGS = real


@contextlib.contextmanager
def adaptive_coded() -> Iterator[None]:
    """Coding 2 alone (never coding 3), and the model's record whatever a classical file
    would cost: a golden file that must pin coding 2's levels whichever coding is smaller."""
    from igpt_codec.format.records import CODING_ADAPTIVE
    from igpt_codec.pipelines import stream

    real = stream.FULL_WRITER_CODINGS
    stream.FULL_WRITER_CODINGS = (CODING_ADAPTIVE,)
    try:
        with model_coded():
            yield
    finally:
        stream.FULL_WRITER_CODINGS = real


def tiny_checkpoint(directory: Path) -> Path:
    """The frozen tiny model's random weights (32 wide, 2 layers, seed 2026): both golden
    bundles, with and without a span, are exports of these."""
    from igpt_codec.export.make_random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(
        directory,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=1024,
        seed=2026,
        lm_head_scale=20.0,
    )


def frozen_model() -> Path:
    target = HERE / "model"
    if not target.exists():
        from igpt_codec.export.onnx_export import export_bundle

        ckpt = tiny_checkpoint(Path("/tmp/golden-ckpt"))
        export_bundle(str(ckpt), target, calibration_images=16)
    return target


SPAN_MODEL = HERE / "models" / "12f32c72c4a71c93"


def frozen_span_model() -> Path:
    """The tiny model's weights exported with an attention span of 64 (contract
    exact-int-v1-span): a 32x32 thumbnail wraps its ring of 64 slots 16 times, and a
    full-resolution band's known-rows call (SOS + 128 cells) is longer than the ring.
    Kept under models/<fingerprint>/ like the old defaults, so every tool that looks for
    a golden file's bundle there finds it."""
    target = SPAN_MODEL
    if not target.exists():
        from igpt_codec.export.onnx_export import export_bundle

        ckpt = tiny_checkpoint(Path("/tmp/golden-span-ckpt"))
        out = Path("/tmp/golden-span-bundle")
        export_bundle(str(ckpt), out, calibration_images=16, attention_span=64, force=True)
        fingerprint = json.loads((out / "manifest.json").read_text())["fingerprint"]
        if fingerprint != target.name:
            raise SystemExit(f"the span bundle exported as {fingerprint}, not {target.name}")
        out.rename(target)
    return target


def main() -> None:
    pics = images()
    tiny = load_bundle(frozen_model())
    span = load_bundle(frozen_span_model())
    default = load_bundle(None)
    plan = {
        "default_one_32.igpt": (default, [("photo", 32)]),
        "default_mixed.igpt": (
            default,
            [("grey", 8), ("alpha", 16), ("palette", 32), ("photo", 1)],
        ),
        "tiny_one_24.igpt": (tiny, [("second", 24)]),
        "tiny_many.igpt": (tiny, [("photo", 4), ("second", 16), ("grey", 16), ("alpha", 31)]),
        # Full resolution (kinds 3 and 4): context rows, padding, the last band moved up,
        # two segments in one band (1030 columns = 33 windows), between thumbnails.
        "tiny_full.igpt": (
            tiny,
            [
                ("grey", 8),
                ("photo", ("full", (100, 150, 170, 217))),
                ("wide", ("full", (0, 0, 1030, 3))),
                ("grey", ("full", (7, 9, 40, 44))),
                ("second", 16),
            ],
        ),
        # Coding 2 (adaptive context mixing, written since 2026-12): the same layouts, so
        # the mixer's chains, padding and one-window steps are pinned too; and a crop
        # under the shipped model of the day, whose tables the mixer really reshapes.
        "tiny_full_adaptive.igpt": (
            tiny,
            [
                ("photo", ("full", (100, 150, 170, 217))),
                ("wide", ("full", (0, 0, 1030, 3))),
                ("grey", 8),
                ("grey", ("full", (7, 9, 40, 44))),
            ],
        ),
        "default_full_adaptive.igpt": (default, [("photo", ("full", (200, 120, 296, 184)))]),
        # One segment record per chain (the CHAIN bit, written since 2026-12): several bands
        # and chains, padding, a one-band image, after a thumbnail.
        "tiny_full_chain.igpt": (
            tiny,
            [
                ("second", 8),
                ("photo", ("full", (100, 150, 170, 217))),
                ("wide", ("full", (0, 0, 1030, 3))),
                ("grey", ("full", (7, 9, 40, 75))),
            ],
        ),
        # What `compress --full` writes with the shipped model of the day: coding 2, one
        # segment per chain over several bands.
        "default_full_chain.igpt": (default, [("photo", ("full", (150, 100, 246, 190)))]),
        # Band checks (the BAND_CHECKS feature, written since 2026-12-05): an image of three
        # bands in two chains, the second 4 columns wide plus padding; then a one-band image,
        # which the encoder writes without the feature; between thumbnails. Small and under
        # the tiny model, so the web decoder's golden test stays quick.
        "tiny_full_band_checks.igpt": (
            tiny,
            [
                ("second", 4),
                ("photo", ("full-model", (100, 150, 136, 212))),
                ("grey", ("full-model", (7, 9, 19, 19))),
            ],
        ),
        # Full-resolution images stored as classical files (kinds 5 and 6, issue 28), where
        # they beat the model: lossless WebP, and PNG (as a Pillow without WebP writes it),
        # between a thumbnail and a model-coded crop.
        "default_classical.igpt": (
            default,
            [
                ("stripes", ("full", (0, 0, 96, 64))),
                ("grey", 8),
                ("sprites", ("full-png", (8, 8, 72, 72))),
                ("photo", ("full", (200, 120, 232, 140))),
            ],
        ),
        # The shipped default of 2026-12-05 (v5, 55cbfca8976101ef: attention span 128, a ring
        # of 128 slots): a thumbnail, and what `compress --full` writes with it (coding 2,
        # chains, band checks) on a crop of four bands, whose known-rows calls wrap the ring.
        "default_span128.igpt": (
            default,
            [("photo", 32), ("photo", ("full-model", (150, 100, 214, 212)))],
        ),
        # The ring cache of a model with an attention span (exact-int-v1-span, written since
        # 2026-12-05): a 32x32 thumbnail (1,024 steps through 64 slots) beside a small one;
        # a full-resolution image of three bands in two chains (the known-rows calls of the
        # later bands, 129 and 961 tokens, are longer than the ring), then a one-band image.
        "span_thumbnails.igpt": (span, [("photo", 32), ("second", 8)]),
        "span_full_chain.igpt": (
            span,
            [
                ("photo", ("full-model", (100, 150, 136, 212))),
                ("grey", ("full-model", (7, 9, 19, 19))),
            ],
        ),
        # Coding 3 (coding 2 refined by the longer-reach levels of core/match.py, written
        # since 2026-12-05 where it is smaller): text of three bands in two chains, the
        # second 6 columns wide plus padding, then sprites of one band, around a thumbnail;
        # and a text crop under the shipped model of the day, whose levels really learn.
        "tiny_full_match.igpt": (
            tiny,
            [
                ("text", ("full-match", (0, 0, 70, 67))),
                ("grey", 8),
                ("sprites", ("full-match", (8, 8, 44, 30))),
            ],
        ),
        "default_full_match.igpt": (default, [("text", ("full-match", (0, 0, 64, 64)))]),
        # Linear levels (the LINEAR feature, written since 2026-12-06 with codings 2 and 3):
        # coding 2 on a photo crop of three bands in two chains, coding 3 on text, and a
        # one-band image, around a thumbnail, under the tiny model (quick for the web
        # decoder's golden test); then coding 2 and coding 3 under the shipped model of the
        # day, whose tables the levels really reshape.
        "tiny_full_linear.igpt": (
            tiny,
            [
                ("photo", ("full-adaptive", (100, 150, 136, 212))),
                ("second", 4),
                ("text", ("full-match", (0, 0, 70, 67))),
                ("grey", ("full-adaptive", (7, 9, 19, 19))),
            ],
        ),
        "default_full_linear.igpt": (
            default,
            [
                ("photo", ("full-adaptive", (150, 100, 214, 212))),
                ("text", ("full-match", (0, 0, 64, 64))),
            ],
        ),
        # The shipped default of 2026-12-06 (v6: 96 wide, 2 layers, span 128): a thumbnail,
        # and what `compress --full` writes with it (coding 2 with linear levels, chains,
        # band checks) on a crop of four bands.
        "default_v6.igpt": (
            default,
            [("photo", 32), ("photo", ("full-model", (150, 100, 214, 212)))],
        ),
    }
    expected_path = HERE / "expected.json"
    expected = json.loads(expected_path.read_text()) if expected_path.exists() else {}
    for name, (bundle, items) in plan.items():
        if (HERE / name).exists() or name in expected:
            print(f"{name} exists: left as it is")
            continue
        records = []
        inputs = []
        for key, size in items:
            if isinstance(size, tuple):  # ("full", "full-png", "full-model", ..., crop box)
                crop = pics[key].crop(size[1])
                inputs.append((crop, 0, True))
                how = {"full-png": without_webp, "full-model": model_coded}
                how["full-match"] = match_coded
                how["full-adaptive"] = adaptive_coded
                with how.get(size[0], contextlib.nullcontext)():
                    records += unpack_stream(api.compress([crop], bundle, full=True))
            else:
                inputs.append((pics[key], size, False))
                records += unpack_stream(api.compress([pics[key]], bundle, size=size))
        stream = pack_stream(records)
        decoded = api.decompress(stream, bundle)
        for (picture, size, full), image in zip(inputs, decoded, strict=True):
            tokens = api.tokenize([picture], bundle, size, full=full)[0].tokens
            assert np.array_equal(image.tokens, tokens), name
        (HERE / name).write_bytes(stream)
        expected[name] = {
            "fingerprint": bundle.fingerprint.hex(),
            "bytes": len(stream),
            "records": [
                {
                    "side": None if image.full else image.side,
                    "full": image.full,
                    "size": list(image.original_size),
                    "mode": image.original_mode,
                    "tokens": image.tokens.astype(int).tolist(),
                }
                for image in decoded
            ],
        }
        print(f"wrote {name}: {len(stream)} bytes, {len(decoded)} records")
    expected_path.write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
