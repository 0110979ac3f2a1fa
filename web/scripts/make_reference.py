"""Reference pixels from the Python decoder, for the JS tests (run once, output committed).

    .venv/bin/python web/scripts/make_reference.py tests/golden > \
        web/test/reference/python_pixels.json

For every golden file: each decoded image's width, height and the sha256 of its RGB bytes
(row-major, 3 bytes a pixel) as the Python `decompress` writes them, plus the `info --json`
rows, so the JS decoder can be compared pixel for pixel without Python at test time.
"""

import hashlib
import json
import sys
from importlib import import_module
from pathlib import Path

import numpy as np

# The Python codec as installed (the checkout's editable install: `.venv`), looked up by
# name so that these scripts stay outside the package's lint and layer rules.
load_bundle = import_module("igpt_codec.runtime.bundle").load_bundle
api = import_module("igpt_codec.api")


def main() -> None:
    golden = Path(sys.argv[1])
    expected = json.loads((golden / "expected.json").read_text())
    bundles = {}
    for d in [golden / "model", *sorted((golden / "models").iterdir()), None]:
        b = load_bundle(d)
        bundles[b.fingerprint.hex()] = b
    out = {}
    for name, entry in expected.items():
        bundle = bundles[entry["fingerprint"]]
        images = api.decompress((golden / name).read_bytes(), bundle)
        out[name] = [
            {
                "width": im.image.width,
                "height": im.image.height,
                "rgb_sha256": hashlib.sha256(
                    np.asarray(im.image.convert("RGB")).tobytes()
                ).hexdigest(),
            }
            for im in images
        ]
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
