#!/usr/bin/env bash
# Fresh virtual environment, every extra the tests need, then the test suite and the linters.
# torch is pinned first: the CPU wheel lies on disk; an unpinned torch would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[export,test,bench,scale]"
ruff check .
ruff format --check .
set +e
python -m pytest -q --durations=25 "$@"  # the slowest 25: the 15-minute budget (README)
status=$?
bash web/scripts/test.sh || [ "$status" -ne 0 ] || status=1  # the web decoder (web/README.md); fails the run too
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
