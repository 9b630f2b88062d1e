#!/usr/bin/env bash
# Set up (or reuse) .venv and run the test suite: unit tests for every lib module, then the
# smoke profile of run_all.sh end to end (tests/test_run_all.py). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
exec python -m pytest "$@"
