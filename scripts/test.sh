#!/usr/bin/env bash
# Sets up a virtual environment (once), then lints and runs the test suite.
#   scripts/test.sh                  fast suite on the pinned versions (requirements.txt)
#   scripts/test.sh --deps=newest    the same on the newest versions setup.cfg allows
#   scripts/test.sh --all-deps       both in turn (what CI runs)
#   scripts/test.sh --slow           only the tests marked slow
#   scripts/test.sh -k lars          any further arguments go to pytest
# Tests run in TEST_WORKERS (default 2) pytest-xdist processes, one test file per process
# (module fixtures are built once); TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
deps="pinned"
marker="not slow"
all_deps=0
args=()
for arg in "$@"; do
  case "$arg" in
    --all-deps) all_deps=1 ;;
    --deps=*) deps="${arg#--deps=}" ;;
    --slow) marker="slow" ;;
    *) args+=("$arg") ;;
  esac
done
if [ "$all_deps" = 1 ]; then
  if [ "$marker" = "slow" ]; then args=(--slow ${args[@]+"${args[@]}"}); fi
  for d in pinned newest; do
    echo "== test suite with the $d dependency versions"
    scripts/test.sh "--deps=$d" ${args[@]+"${args[@]}"}
  done
  exit 0
fi
venv="$(scripts/setup.sh "--deps=$deps" | tail -n 1)"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
"$venv/bin/python" -c "import sys, tensorflow as tf, keras; print(f'Python {sys.version.split()[0]}, TensorFlow {tf.__version__}, Keras {keras.__version__}')"
if [ "$deps" = "pinned" ]; then
  "$venv/bin/ruff" check .
fi
workers="${TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadfile); fi
"$venv/bin/python" -m pytest -m "$marker" ${parallel[@]+"${parallel[@]}"} ${args[@]+"${args[@]}"}
