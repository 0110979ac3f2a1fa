#!/usr/bin/env bash
# The portability suite (docs/portability.md): encode the 105 held-out photos here, decode
# them natively (1 and 2 threads, batch 16 and 1), with onnxruntime 1.20.x and the newest
# release in their own virtual environments, under qemu-x86_64 -cpu Nehalem and under
# aarch64 emulation, and compare every decoded token with the encoder's.
#
#   bash scripts/portability.sh --emulated-limit 16      # emulated columns: 16 files each (~35 min)
#   bash scripts/portability.sh                          # all 105 files everywhere (~2 h on 2 cores)
#   bash scripts/portability.sh --columns native-1t-b16,ort-1.20 --reuse-streams
#
# Arguments go to `python -m tests.harness.portability`. Sets up, once, what it needs:
#   - the dev environment .venv (scripts/test.sh makes it; torch is needed for the float export);
#   - .venv-ort120 (onnxruntime 1.20.x) and .venv-ortnew (the newest), decode-only, git-ignored;
#   - qemu-user (apt-get, when run as root and missing);
#   - the aarch64 root in ~/.cache/arm64-root (../shared/tools/aarch64/build-arm64-root.sh).
# A column whose tools are missing is reported as skipped. Results: bench_out/portability.json
# and bench_out/portability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "no $VENV: run bash scripts/test.sh first (it makes the dev environment)" >&2
    exit 2
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

python -m tests.harness.portability setup

if ! command -v qemu-x86_64 >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user
    else
        echo "qemu-user is missing (apt-get install qemu-user): emulated columns will be skipped" >&2
    fi
fi

TOOLS=../shared/tools/aarch64
ARM64_ROOT="${ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/arm64-root}"
if [ ! -x "$ARM64_ROOT/usr/bin/python3.11" ] && [ -f "$TOOLS/build-arm64-root.sh" ] \
    && command -v qemu-aarch64 >/dev/null; then
    PIP="python -m pip" bash "$TOOLS/build-arm64-root.sh" "$ARM64_ROOT"
fi
export ARM64_ROOT

exec python -m tests.harness.portability "$@"
