#!/usr/bin/env bash
# Sets up .venv (once) and runs the offline demo: python train.py (configs/demo.flags defaults).
# Any arguments go to train.py, e.g. scripts/demo.sh --epochs=2
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec .venv/bin/python train.py --flagfile=configs/demo.flags "$@"
