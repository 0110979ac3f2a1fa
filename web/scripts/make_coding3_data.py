"""Coding-3 streams for the web decoder's tests and speed line, written by the Python codec.

Why: until a coding-3 golden file exists (tests/golden/, written once by make_golden.py),
the JS decoder needs a stream that Python coded with coding 3 to prove it decodes the same
tokens; and the speed of coding 3 against coding 2 is measured on the same image coded
both ways. Each stream is decoded by Python before it is written, and its tokens are
stored beside it (web/test/data/coding3.json, with Python's `info --json` rows) for
web/test/coding3.test.js.

    .venv/bin/python web/scripts/make_coding3_data.py           # the tiny-model test file
    .venv/bin/python web/scripts/make_coding3_data.py --speed DIR  # default model, codings 2 and 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.synthetic import text_page  # noqa: E402
from igpt_codec import api  # noqa: E402
from igpt_codec.format.container import pack_stream  # noqa: E402
from igpt_codec.format.records import CODING_ADAPTIVE, CODING_MATCH  # noqa: E402
from igpt_codec.pipelines.fullres import encode_full, grid_of, make_header  # noqa: E402
from igpt_codec.runtime.bundle import load_bundle  # noqa: E402
from igpt_codec.runtime.exact_runner import ExactTokenModel  # noqa: E402

DATA = ROOT / "web" / "test" / "data"


def coded(
    bundle, picture: Image.Image, coding: int, segment_windows: int | None = None
) -> tuple[bytes, list[int]]:
    """A one-image stream of `picture` at full resolution in `coding`, checked by decoding."""
    image = api.tokenize([picture], bundle, 0, full=True)[0]
    grid = grid_of(bundle.n_positions)
    header = make_header(image, bundle.fingerprint, grid, coding, segment_windows=segment_windows)
    record, _ = encode_full(ExactTokenModel(bundle, threads=1), image, header)
    stream = pack_stream([record])
    decoded = api.decompress(stream, bundle)[0]
    assert np.array_equal(decoded.tokens, image.tokens), "Python does not decode its own stream"
    return stream, image.tokens.reshape(-1).astype(int).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=Path, help="write the default-model speed pair here")
    args = parser.parse_args(argv)
    text = Image.fromarray(text_page(1, 11, ()))
    if args.speed:
        bundle = load_bundle(None)
        args.speed.mkdir(parents=True, exist_ok=True)
        crop = text.crop((0, 0, 96, 64))
        for coding in (CODING_ADAPTIVE, CODING_MATCH):
            start = time.process_time()
            stream, _ = coded(bundle, crop, coding)
            path = args.speed / f"text96x64_coding{coding}.igpt"
            path.write_bytes(stream)
            print(path, len(stream), "bytes", f"{time.process_time() - start:.1f} s CPU")
        return 0
    bundle = load_bundle(ROOT / "tests" / "golden" / "model")
    # Two bands in two chains of 2 windows and 1 (8 wide plus padding): steps of 2, then 1.
    crop = text.crop((2, 3, 74, 48))
    stream, tokens = coded(bundle, crop, CODING_MATCH, segment_windows=2)
    path = DATA / "tiny_text_coding3.igpt"
    path.write_bytes(stream)
    from click.testing import CliRunner

    from igpt_codec.cli.info import info

    result = CliRunner().invoke(info, [str(path), "--json"])
    assert result.exit_code == 0, result.output
    entry = {
        "about": "web/scripts/make_coding3_data.py: Python's coding-3 stream and its tokens",
        "fingerprint": bundle.fingerprint.hex(),
        "width": crop.width,
        "height": crop.height,
        "info": json.loads(result.output)["records"],
        "tokens": tokens,
    }
    (DATA / "coding3.json").write_text(json.dumps({"tiny_text_coding3.igpt": entry}) + "\n")
    print(len(stream), "bytes,", len(tokens), "tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
