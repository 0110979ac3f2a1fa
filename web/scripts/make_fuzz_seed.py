"""The small stream the JS fuzz mutates (run once, output committed).

    .venv/bin/python web/scripts/make_fuzz_seed.py \
        tests/golden/model web/test/data

Tiny golden model, few tokens so thousands of mutated decodes stay fast: a named 3x3
thumbnail, a 4x4 one, a 6x5 full-resolution image (coding 2) and a 40x3 one with two
windows in two chains. Writes fuzz_seed.igpt and fuzz_seed.json (tokens per image).
"""

import json
import sys
import tempfile
from importlib import import_module
from pathlib import Path

import numpy as np
from PIL import Image

# The Python codec as installed (the checkout's editable install: `.venv`), looked up by
# name so that these scripts stay outside the package's lint and layer rules.
load_bundle = import_module("igpt_codec.runtime.bundle").load_bundle
api = import_module("igpt_codec.api")
pack_stream = import_module("igpt_codec.format.container").pack_stream
unpack_stream = import_module("igpt_codec.format.container").unpack_stream


def main() -> None:
    bundle = load_bundle(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    rng = np.random.default_rng(27)
    photo = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).resize((96, 96))
    tmp = Path(tempfile.mkdtemp())
    named = tmp / "leaf.png"
    photo.save(named)
    records = []
    records += unpack_stream(api.compress([str(named)], bundle, size=3, names=True))
    records += unpack_stream(api.compress([photo], bundle, size=4))
    records += unpack_stream(api.compress([photo.crop((10, 10, 16, 15))], bundle, full=True))
    records += unpack_stream(api.compress([photo.crop((0, 20, 40, 23))], bundle, full=True))
    stream = pack_stream(records)
    decoded = api.decompress(stream, bundle)
    (out / "fuzz_seed.igpt").write_bytes(stream)
    tokens = [np.asarray(im.tokens).reshape(-1).astype(int).tolist() for im in decoded]
    (out / "fuzz_seed.json").write_text(
        json.dumps({"fingerprint": bundle.fingerprint.hex(), "tokens": tokens}) + "\n"
    )
    print(len(stream), [len(t) for t in tokens])


if __name__ == "__main__":
    main()
