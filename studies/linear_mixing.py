"""Linear levels against coding 2's rounded levels, on photos (docs/speed.md, "Linear levels").

Why: the kind-3 LINEAR feature (format/SPEC.md, "Linear levels"; codec/core/linear.py)
makes coding 2's three levels one exact linear combination, so its table takes about half
the arithmetic. This study measures what that costs in bytes and saves in CPU: each photo
is compressed and decompressed twice through `api` with coding 2 only and one worker, once
with LINEAR and once without, and every run is checked lossless.

    python -m studies.linear_mixing PHOTO... [--size 768x512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _compress_sizes(photo: Path, size: tuple[int, int] | None, linear: bool) -> dict[str, float]:
    """compress(full=True) with coding 2 only, LINEAR on or off: payload bytes, encode and
    decode CPU seconds (one worker), and whether the decode gave the tokens."""
    from PIL import Image

    from igpt_codec import api
    from igpt_codec.format.records import CODING_ADAPTIVE
    from igpt_codec.pipelines import fullres, stream

    image = Image.open(photo).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    saved = (fullres.make_header, stream.FULL_WRITER_CODINGS)

    def header(*args, **kwargs):
        return saved[0](*args, **kwargs, linear_levels=linear)

    fullres.make_header, stream.FULL_WRITER_CODINGS = header, (CODING_ADAPTIVE,)
    try:
        start = time.process_time()
        data = api.compress(image, full=True, threads=1)
        encode = time.process_time() - start
        start = time.process_time()
        decoded = api.decompress(data, threads=1)
        decode = time.process_time() - start
    finally:
        fullres.make_header, stream.FULL_WRITER_CODINGS = saved
    tokens = api.tokenize([image], api.resolve_bundle(None), 32, full=True)[0].tokens
    same = bool(np.array_equal(decoded[0].grid, tokens))
    return {"bytes": len(data), "encode_cpu_s": encode, "decode_cpu_s": decode, "lossless": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--size", help="resize each photo to WxH first (Lanczos)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    rows = []
    for photo in args.photos:
        base = _compress_sizes(photo, size, linear=False)
        new = _compress_sizes(photo, size, linear=True)
        rows.append({"photo": photo.name, "coding2": base, "linear": new})
        print(
            f"{photo.name}: bytes {base['bytes']} -> {new['bytes']} "
            f"({new['bytes'] / base['bytes']:.5f}); decode CPU {base['decode_cpu_s']:.2f} -> "
            f"{new['decode_cpu_s']:.2f} s; encode CPU {base['encode_cpu_s']:.2f} -> "
            f"{new['encode_cpu_s']:.2f} s; lossless {base['lossless'] and new['lossless']}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
