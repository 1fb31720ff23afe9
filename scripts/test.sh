#!/usr/bin/env bash
# Set up and run the tests: the README's test command. The quick suite by default, then the tests
# marked `isolated` in a pytest process of their own (they signal the process: in the big one, with
# OpenVINO, onnxruntime and the rest loaded, a SIGTERM to it segfaulted under CI); tests marked
# `slow` (Ray clusters, real-model runs) with `bash scripts/test.sh -m slow`, as CI does too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ " $* " == *" -m "* ]]; then
    python3 -m pytest -q "$@"
else
    python3 -m pytest -q -m "not slow and not isolated" "$@"
    python3 -m pytest -q -m isolated "$@" || [[ $? -eq 5 ]]  # 5: a -k or a path that selects none of them
fi
