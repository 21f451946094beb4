#!/usr/bin/env bash
# Creates .venv-bench/ (repo root) for the benchmarks: the project's pinned requirements, the
# project itself, and the PyTorch peers (torch, torchvision, byol-pytorch). Idempotent: a second
# run only checks the imports. PyTorch never enters the project's own dependencies.
#   bash bench/setup_env.sh            create or complete .venv-bench/
#   bash bench/setup_env.sh --force    reinstall everything into the existing .venv-bench/
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
BYOL_PYTORCH_VERSION=0.9.1
VENV=.venv-bench
PY="$VENV/bin/python"
MARKER="$VENV/.bench-installed"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi

# torchvision must be imported before tensorflow: the other order crashes (segfault) when
# torchvision loads its C++ operators, so the bench scripts import PyTorch first.
IMPORTS="import torch, torchvision, byol_pytorch, tensorflow, keras, byol_tf"

check_imports() {
  TF_CPP_MIN_LOG_LEVEL=2 "$PY" -c "$IMPORTS" \
    >/dev/null 2>&1
}

if [ "${1:-}" != "--force" ] && [ -f "$MARKER" ] && [ ! requirements.txt -nt "$MARKER" ] \
   && check_imports; then
  echo "$VENV is up to date."
  exit 0
fi

pip_install() {
  "$PY" -m pip install -q --disable-pip-version-check "$@"
}

pip_install --upgrade pip
# The project's exact pins, then the project (editable, so the bench sees the working tree).
pip_install -r requirements.txt
pip_install --no-deps -e .
# PyTorch peers; -c keeps the project's pins (numpy, ...) from moving.
pip_install -c requirements.txt "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# byol-pytorch without its dependency resolution, plus what its modules import at import time:
# einops (byol_pytorch.py), beartype and accelerate (trainer.py, imported by the package __init__).
pip_install -c requirements.txt einops beartype accelerate
# The plots of bench/quality.py.
pip_install -c requirements.txt matplotlib
pip_install --no-deps "byol-pytorch==$BYOL_PYTORCH_VERSION"

if ! check_imports; then
  echo "error: $VENV was installed but 'import byol_tf, torch, byol_pytorch' fails:" >&2
  TF_CPP_MIN_LOG_LEVEL=2 "$PY" -c "$IMPORTS"
  exit 1
fi
touch "$MARKER"
"$PY" -c "import torch, torchvision, tensorflow as tf, importlib.metadata as m; \
print('tensorflow', tf.__version__, '| torch', torch.__version__, '| torchvision', \
torchvision.__version__, '| byol-pytorch', m.version('byol-pytorch'))" 2>/dev/null
echo "$VENV ready: activate with 'source $VENV/bin/activate'."
