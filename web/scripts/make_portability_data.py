"""Streams for the Node/WASM portability column: the 105 held-out photos, 32x32, one stream
each, encoded natively by the Python codec with the shipped default bundle.

    .venv/bin/python web/scripts/make_portability_data.py OUT_DIR

Writes OUT_DIR/NNN.igpt and OUT_DIR/tokens.json (the encoder's tokens, by file name), the
inputs of scripts/portability.js.
"""

import json
import sys
from importlib import import_module
from pathlib import Path

# The Python codec as installed (the checkout's editable install: `.venv`), looked up by
# name so that these scripts stay outside the package's lint and layer rules.
validation_images = import_module("bench.data").validation_images
api = import_module("igpt_codec.api")
load_bundle = import_module("igpt_codec.runtime.bundle").load_bundle


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(None)
    photos = validation_images()
    tokens = api.tokenize([str(p) for p in photos], bundle, 32)
    expected = {}
    streams = api.compress_each([str(p) for p in photos], bundle, size=32, threads=1)
    for index, ((stream, _summary), image) in enumerate(zip(streams, tokens, strict=True)):
        name = f"{index:03d}.igpt"
        (out / name).write_bytes(stream)
        expected[name] = {"photo": photos[index].name, "tokens": image.tokens.astype(int).tolist()}
    (out / "tokens.json").write_text(
        json.dumps({"fingerprint": bundle.fingerprint.hex(), "files": expected})
    )
    print(f"{len(expected)} streams, bundle {bundle.fingerprint.hex()}")


if __name__ == "__main__":
    main()
