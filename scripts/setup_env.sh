# Sourced by run_all.sh and run_tests.sh: create or reuse .venv and install the pinned
# requirements only when requirements.txt or pyproject.toml changed (idempotent, fast when warm).
set -euo pipefail
# An activated conda env made from environment.yml is used as it is.
if [ -n "${CONDA_PREFIX:-}" ] && "$CONDA_PREFIX/bin/python" -c "import lib, papermill, torch" 2>/dev/null; then
  export PATH="$CONDA_PREFIX/bin:$PATH" PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
  return 0
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "warning: pinned for Python 3.11 ($("$PY" --version) found); set PYTHON=python3.11" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (pinned requirements; torch==2.13.0 CPU wheel)..."
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
