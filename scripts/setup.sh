#!/usr/bin/env bash
# Creates a virtual environment with byol_tf and its dependencies, unless it is up to date
# (byol_tf is reinstalled whenever a file of the package changed). Programs run from the clone
# (python train.py, pytest) use the clone's byol_tf; the installed copy serves the console
# scripts byol-train, byol-evaluate and byol-export.
#   scripts/setup.sh                 .venv: the pinned versions of requirements.txt (default),
#                                    the oldest versions setup.cfg allows
#   scripts/setup.sh --deps=newest   .venv-newest: a clean `pip install .[test]`, i.e. the
#                                    newest versions that setup.cfg allows
#   scripts/setup.sh --deps=parity   .venv-parity: the pinned versions plus the `parity` extra
#                                    (JAX, Haiku, dill) at the versions of requirements-parity.txt
# pip runs with -qq: its errors show, its warnings (often about the machine's own pip
# configuration) do not. Prints the environment's folder on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
deps="pinned"
for arg in "$@"; do
  case "$arg" in
    --deps=*) deps="${arg#--deps=}" ;;
    *) echo "scripts/setup.sh: error: unknown argument $arg (expected --deps=pinned|newest|parity)" >&2; exit 2 ;;
  esac
done
case "$deps" in
  pinned) venv=".venv"; stamp_sources=(requirements.txt) ;;
  newest) venv=".venv-newest"; stamp_sources=(setup.cfg) ;;
  parity) venv=".venv-parity"; stamp_sources=(requirements.txt requirements-parity.txt setup.cfg) ;;
  *) echo "scripts/setup.sh: error: --deps must be pinned, newest or parity. Received: --deps=$deps" >&2; exit 2 ;;
esac
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stale=0
if ! "$venv/bin/python" -c "import byol_tf, tensorflow, pytest" >/dev/null 2>&1; then stale=1; fi
for source in "${stamp_sources[@]}"; do
  if [ "$source" -nt "$venv/.installed" ]; then stale=1; fi
done
if [ -n "$(find byol_tf setup.cfg -newer "$venv/.installed" -print -quit 2>/dev/null)" ]; then
  stale=1
fi
if [ "$stale" = 1 ]; then
  "$venv/bin/python" -m pip install -qq --upgrade pip
  case "$deps" in
    pinned)
      "$venv/bin/python" -m pip install -qq -r requirements.txt
      "$venv/bin/python" -m pip install -qq --no-deps --force-reinstall . ;;
    newest)
      "$venv/bin/python" -m pip install -qq --upgrade --upgrade-strategy eager ".[test]" ;;
    parity)
      # One resolution: the extra's declared ranges must accept the pinned versions.
      "$venv/bin/python" -m pip install -qq -r requirements.txt -r requirements-parity.txt ".[parity]"
      "$venv/bin/python" -m pip install -qq --no-deps --force-reinstall . ;;
  esac
  touch "$venv/.installed"
fi
echo "$venv"
