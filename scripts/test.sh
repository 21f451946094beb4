#!/usr/bin/env bash
# Sets up a virtual environment (once), then lints and runs the test suite.
#   scripts/test.sh                  fast suite on the pinned versions (requirements.txt: the
#                                    oldest versions setup.cfg allows)
#   scripts/test.sh --deps=newest    the same on the newest versions setup.cfg allows
#   scripts/test.sh --all-deps       both in turn
#   scripts/test.sh --no-onednn      the numerics tests (against NumPy references) with
#                                    TensorFlow's oneDNN kernels off, on the pinned versions
#   scripts/test.sh --parity         the tests marked parity (comparisons with the official
#                                    JAX/Haiku implementation), in .venv-parity; with --slow,
#                                    the slow ones among them (ResNet-50 x1 at full width)
#   scripts/test.sh --ci             every leg above in turn, a timing line each (what CI runs)
#   scripts/test.sh --slow           only the tests marked slow
#   scripts/test.sh -k lars          any further arguments go to pytest
# Tests run in TEST_WORKERS (default 2) pytest-xdist processes, one test file per process
# (module fixtures are built once); TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test files that compare numbers with references; --no-onednn runs them with oneDNN off,
# so that one machine's choice of kernels cannot hide a numerical difference.
numerics_tests=(
  tests/test_losses.py tests/test_optimizers.py tests/test_schedules.py
  tests/test_grouped_views.py tests/test_callbacks.py tests/test_accumulation.py
  tests/test_augment.py tests/test_evaluation.py tests/test_model.py tests/test_batch_norm.py
)
leg="pinned"
slow=0
multi=""
args=()
for arg in "$@"; do
  case "$arg" in
    --ci) multi="pinned no-onednn parity newest" ;;
    --all-deps) multi="pinned newest" ;;
    --deps=pinned | --deps=newest) leg="${arg#--deps=}" ;;
    --deps=*) echo "scripts/test.sh: error: --deps must be pinned or newest. Received: $arg" >&2; exit 2 ;;
    --no-onednn) leg="no-onednn" ;;
    --parity) leg="parity" ;;
    --slow) slow=1 ;;
    *) args+=("$arg") ;;
  esac
done

if [ -n "$multi" ]; then
  # Each leg runs even when an earlier one failed; the exit status says whether all passed.
  if [ "$slow" = 1 ]; then args=(--slow ${args[@]+"${args[@]}"}); fi
  failed=()
  timings=()
  for l in $multi; do
    echo "== leg $l"
    start=$SECONDS
    status=0
    case "$l" in
      pinned | newest) scripts/test.sh "--deps=$l" ${args[@]+"${args[@]}"} || status=$? ;;
      *) scripts/test.sh "--$l" ${args[@]+"${args[@]}"} || status=$? ;;
    esac
    line="leg $l: $((SECONDS - start)) s, $([ "$status" = 0 ] && echo passed || echo "FAILED (exit $status)")"
    echo "== $line"
    timings+=("$line")
    if [ "$status" != 0 ]; then failed+=("$l"); fi
  done
  echo "== timings"
  printf '   %s\n' "${timings[@]}"
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "== failed legs: ${failed[*]}"
    exit 1
  fi
  exit 0
fi

case "$leg" in
  pinned | no-onednn) deps="pinned" ;;
  *) deps="$leg" ;;
esac
venv="$(scripts/setup.sh "--deps=$deps" | tail -n 1)"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [ "$leg" = "no-onednn" ]; then export TF_ENABLE_ONEDNN_OPTS=0; fi
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -c "import os, sys, tensorflow as tf, keras; print(f'Python {sys.version.split()[0]}, TensorFlow {tf.__version__}, Keras {keras.__version__}, TF_ENABLE_ONEDNN_OPTS={os.environ.get(\"TF_ENABLE_ONEDNN_OPTS\", \"unset\")}')"
if [ "$leg" = "pinned" ]; then
  "$venv/bin/ruff" check .
fi
workers="${TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadfile); fi
case "$leg" in
  parity)
    # The parity tests skip themselves without Haiku: here it must be there, or the leg would
    # pass without comparing anything.
    "$venv/bin/python" -c "import dill, haiku, jax; print(f'JAX {jax.__version__}, Haiku {haiku.__version__}, dill {dill.__version__}')"
    marker="parity and not slow"
    if [ "$slow" = 1 ]; then marker="parity and slow"; fi
    status=0
    "$venv/bin/python" -m pytest -m "$marker" ${args[@]+"${args[@]}"} || status=$?
    if [ "$status" = 5 ]; then
      # pytest's 5: no test was collected. That is a failure only once parity tests exist.
      if grep -rlq "mark\.parity" tests; then
        echo "scripts/test.sh: error: tests marked parity exist, but pytest -m parity collected none" >&2
        exit 5
      fi
      echo "scripts/test.sh: no test is marked parity yet: the parity leg has nothing to run"
      status=0
    fi
    exit "$status" ;;
  no-onednn)
    marker="not slow and not parity"
    if [ "$slow" = 1 ]; then marker="slow and not parity"; fi
    "$venv/bin/python" -m pytest -m "$marker" ${parallel[@]+"${parallel[@]}"} "${numerics_tests[@]}" ${args[@]+"${args[@]}"} ;;
  *)
    marker="not slow and not parity"
    if [ "$slow" = 1 ]; then marker="slow and not parity"; fi
    "$venv/bin/python" -m pytest -m "$marker" ${parallel[@]+"${parallel[@]}"} ${args[@]+"${args[@]}"} ;;
esac
