#!/usr/bin/env bash
# Set up hspace in ./.venv and run the demo (default), or run the tests (--test).
#
#   bash setup.sh              # install, then `hspace demo` on the built-in model (offline)
#   bash setup.sh --test [...] # install what the tests need, then run pytest (extra args go to pytest)
#   bash setup.sh --no-demo    # install only
#
# torch: an existing torch in the venv is kept. Otherwise HSPACE_TORCH is installed
# (default torch==2.13.0, the CPU build that these machines have on local disk; on a GPU
# machine set HSPACE_TORCH=torch, or install your own torch into .venv first).
set -euo pipefail
cd "$(dirname "$0")"

mode=demo
if [[ "${1:-}" == "--test" ]]; then mode=test; shift; elif [[ "${1:-}" == "--no-demo" ]]; then mode=none; shift; fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

if ! "$VPY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing ${HSPACE_TORCH:-torch==2.13.0}"
  "${PIP[@]}" "${HSPACE_TORCH:-torch==2.13.0}"
fi
if ! "$VPY" -c "import hspace, pytest" 2>/dev/null || [[ pyproject.toml -nt .venv/.hspace-installed ]]; then
  echo "[setup] installing hspace and its dependencies"
  "${PIP[@]}" -e ".[test]"
  touch .venv/.hspace-installed
fi

case "$mode" in
  demo) exec .venv/bin/hspace demo --output hspace-demo --overwrite ;;
  test) exec "$VPY" -m pytest -q "$@" ;;
  none) echo "[setup] done: activate with 'source .venv/bin/activate', then run 'hspace --help'" ;;
esac
