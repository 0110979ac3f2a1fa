"""Reference data from the Python decoder, for the JS tests (run once, output committed).

    .venv/bin/python web/scripts/make_reference.py tests/golden > \
        web/test/reference/python_pixels.json
    .venv/bin/python web/scripts/make_reference.py tests/golden --add NAME... \
        web/test/reference/python_pixels.json       # new golden files only, merged in
    .venv/bin/python web/scripts/make_reference.py tests/golden --info > \
        web/test/reference/python_info.json

Pixels: for every golden file, each decoded image's width, height and the sha256 of its RGB
bytes (row-major, 3 bytes a pixel) as the Python `decompress` writes them, so the JS decoder
can be compared pixel for pixel without Python at test time. `--add` computes the named files
alone and merges them into the given reference file, leaving every other entry as it was
(an entry made by older code is never recomputed with newer code). `--info`: the records of
`info --json` for every golden file and the concatenated one (no model needed), which
`web/test/info.test.js` compares with the JS `info` rows and
`tests/test_cli_info_reference.py` with the Python command's.
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
shipped_earlier = import_module("igpt_codec.runtime.search").shipped_earlier


def bundles(golden: Path) -> dict:
    found = {}
    for d in [golden / "model", *sorted((golden / "models").iterdir()), *shipped_earlier(), None]:
        b = load_bundle(d)
        found[b.fingerprint.hex()] = b
    return found


def pixels(golden: Path, names: list[str]) -> dict:
    expected = json.loads((golden / "expected.json").read_text())
    found = bundles(golden)
    out = {}
    for name in names:
        bundle = found[expected[name]["fingerprint"]]
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
    return out


def info_rows(golden: Path) -> dict:
    from click.testing import CliRunner

    info = import_module("igpt_codec.cli.info").info
    out = {}
    names = [*json.loads((golden / "expected.json").read_text()), "concatenated/two_streams.igpt"]
    for name in names:
        result = CliRunner().invoke(info, [str(golden / name), "--json"])
        if result.exit_code:
            raise SystemExit(f"info {name}: {result.output}")
        out[name] = json.loads(result.output)["records"]
    return out


def main() -> None:
    golden = Path(sys.argv[1])
    args = sys.argv[2:]
    if args[:1] == ["--info"]:
        json.dump(info_rows(golden), sys.stdout, indent=1)
    elif args[:1] == ["--add"]:
        names, target = args[1:-1], Path(args[-1])
        merged = json.loads(target.read_text())
        merged.update(pixels(golden, names))
        target.write_text(json.dumps(merged, indent=1) + "\n")
        return
    else:
        expected = json.loads((golden / "expected.json").read_text())
        json.dump(pixels(golden, list(expected)), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
