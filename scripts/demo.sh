#!/usr/bin/env bash
# Fresh virtual environment with the run-time dependencies only (numpy, Pillow, onnxruntime,
# click: no torch), then compress and decompress the sample photo with the shipped default model.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-run}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e .
mkdir -p demo_out
python cli.py compress samples/bsds500_val_101085.jpg -o demo_out/sample.igpt -f
python cli.py info demo_out/sample.igpt
python cli.py decompress demo_out/sample.igpt -o demo_out/sample_32.png -f
python cli.py decompress demo_out/sample.igpt -o demo_out/sample_full.png --original-size -f
echo "wrote demo_out/sample.igpt, demo_out/sample_32.png and demo_out/sample_full.png"
