#!/usr/bin/env bash
# Sets up .venv (CPU PyTorch 2.13.0 and the test extras) if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test]'
exec .venv/bin/python -m pytest "$@"
