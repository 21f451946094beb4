#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and byol_tf (editable) unless it is up to date.
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
