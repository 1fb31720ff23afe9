#!/usr/bin/env bash
# Set up and run the tests: the README's test command. The quick suite by default; tests marked
# `slow` (Ray clusters, real-model runs) with `bash scripts/test.sh -m slow`, as CI does too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ " $* " == *" -m "* ]]; then
    python3 -m pytest -q "$@"
else
    python3 -m pytest -q -m "not slow" "$@"
fi
