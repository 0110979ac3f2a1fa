#!/usr/bin/env bash
# Fresh virtual environment with the run-time dependencies only (numpy, Pillow, onnxruntime,
# click: no torch), the package installed as users get it (a wheel, not an editable
# install), then compress and decompress the sample photo with the shipped default model,
# from the command line and through the Pillow plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-run}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet .
mkdir -p demo_out
cd demo_out  # the installed package, not the checkout's folders, is what runs here
igpt-codec --version
igpt-codec compress ../samples/bsds500_val_101085.jpg -o sample.igpt -f
igpt-codec info sample.igpt
igpt-codec decompress sample.igpt -o sample_32.png -f
python -m igpt_codec decompress sample.igpt -o sample_full.png --original-size -f
python - <<'PY'
import sys

import igpt_codec.pillow  # registers the IGPT format with Pillow
from PIL import Image

Image.open("../samples/bsds500_val_101085.jpg").save("pillow.igpt")
with Image.open("pillow.igpt") as image:
    image.save("pillow_32.png")
    print(f"Pillow: pillow.igpt is {image.format} {image.size[0]}x{image.size[1]} {image.mode}")
assert open("pillow.igpt", "rb").read() == open("sample.igpt", "rb").read()
assert not {"torch", "transformers", "optimum"} & set(sys.modules)
PY
echo "wrote demo_out/: sample.igpt, sample_32.png (the coded thumbnail, lossless)," \
    "sample_full.png (upscaled approximation), pillow.igpt, pillow_32.png"
