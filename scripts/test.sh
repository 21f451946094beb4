#!/usr/bin/env bash
# Sets up .venv (once) with the pinned dependencies, then lints and runs the test suite.
#   scripts/test.sh           fast suite (what CI runs)
#   scripts/test.sh --slow    only the tests marked slow
#   scripts/test.sh -k lars   any further arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import byol_tf, tensorflow, pytest" >/dev/null 2>&1 \
   || [ requirements.txt -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  touch .venv/.installed
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check .
marker="not slow"
if [ "${1:-}" = "--slow" ]; then marker="slow"; shift; fi
.venv/bin/python -m pytest -m "$marker" "$@"
