#!/usr/bin/env bash
# Set up a virtual environment with the test extras and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test,docs]"
.venv/bin/ruff check datalogger tests bench examples
.venv/bin/mypy datalogger
.venv/bin/pytest -q "$@"
