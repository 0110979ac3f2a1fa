"""Bench streams for the web decoder, and native Python onnxruntime's decode speed on them.

    .venv/bin/python web/scripts/make_bench_data.py web/test/data

Writes bench_1.igpt (one 32x32 thumbnail) and bench_16.igpt (16 of them: one batch of 16
in every decoder) coded with the shipped default bundle, then decodes each with the Python
codec on one thread, 3 runs after a warm-up, and prints the timings as JSON.
"""

import json
import sys
import time
from importlib import import_module
from pathlib import Path

import onnxruntime
from PIL import Image

# The Python codec as installed (the checkout's editable install: `.venv`), looked up by
# name so that these scripts stay outside the package's lint and layer rules.
load_bundle = import_module("igpt_codec.runtime.bundle").load_bundle
api = import_module("igpt_codec.api")
pack_stream = import_module("igpt_codec.format.container").pack_stream
unpack_stream = import_module("igpt_codec.format.container").unpack_stream


SAMPLE = Path("samples/bsds500_val_101085.jpg")


def main() -> None:
    out = Path(sys.argv[1])
    bundle = load_bundle(None)
    with Image.open(SAMPLE) as photo:
        photo = photo.convert("RGB")
    crops = [photo.crop((12 * i, 9 * i, 12 * i + 160, 9 * i + 160)) for i in range(16)]
    one = api.compress(crops[:1], bundle, size=32)
    sixteen = pack_stream(
        [r for c in crops for r in unpack_stream(api.compress([c], bundle, size=32))]
    )
    (out / "bench_1.igpt").write_bytes(one)
    (out / "bench_16.igpt").write_bytes(sixteen)
    result = {
        "onnxruntime": onnxruntime.__version__,
        "fingerprint": bundle.fingerprint.hex(),
        "threads": 1,
    }
    for name, data, images in [("batch_1", one, 1), ("batch_16", sixteen, 16)]:
        api.decompress(data, bundle, threads=1)  # warm-up: session and caches
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            api.decompress(data, bundle, threads=1)
            runs.append(time.perf_counter() - start)
        best = min(runs)
        result[name] = {
            "tokens": 1024 * images,
            "seconds": runs,
            "tokens_per_s": 1024 * images / best,
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
