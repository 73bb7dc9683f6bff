#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): run on a machine with an NVIDIA GPU, from the repo
# root, after `make setup` and `pip install -e '.[gpu]'` where the network allows.
# Writes OUT/gpu_check.json; exits 0 even where packages are missing (it says which).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_check.sh OUT}"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$OUT"
