#!/usr/bin/env bash
# Sets up .venv (once) with the pinned dependencies, then lints and runs the test suite.
#   scripts/test.sh           fast suite (what CI runs)
#   scripts/test.sh --slow    only the tests marked slow
#   scripts/test.sh -k lars   any further arguments go to pytest
# Tests run in TEST_WORKERS (default 2) pytest-xdist processes, one test file per process
# (module fixtures are built once); TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check .
marker="not slow"
if [ "${1:-}" = "--slow" ]; then marker="slow"; shift; fi
workers="${TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadfile); fi
.venv/bin/python -m pytest -m "$marker" ${parallel[@]+"${parallel[@]}"} "$@"
