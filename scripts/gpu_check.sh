#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): run on a machine with an NVIDIA GPU, from the repo
# root, after `make setup` and `pip install -e '.[gpu]'` where the network allows.
# Writes OUT/gpu_check.json; exits 0 even where packages are missing (it says which).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_check.sh OUT}"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import sasq.engines" 2>/dev/null; then
  # a GPU image with its own Python (CUDA PyTorch, no network): install sasq itself, offline
  echo "gpu_check: sasq is not installed for $PY; pip install --no-deps -e . (offline)"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . || true
fi
exec "$PY" scripts/gpu_check.py "$OUT"
