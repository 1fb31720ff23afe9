"""Real parts for the watch tests: a clip with a fire drawn into it, GStreamer's RTSP server and
Mosquitto on loopback, a webhook receiver, an MQTT subscriber, and the scripted answer backend
(the one stand-in: it answers by looking for the fire's colours, as a good model would)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from helpers import free_port, missing_system_package
from fastapi.responses import JSONResponse
from PIL import Image, ImageDraw

from smolsight.engine import Result

SUPPORT = Path(__file__).resolve().parent / "watch_support"
SYSTEM_PYTHON = "/usr/bin/python3"
MOSQUITTO = "/usr/sbin/mosquitto"




def scene(index: int, fire: bool, size=(160, 120)) -> Image.Image:
    """A dim yard with a frame counter; with `fire`, a flame drawn in the middle."""
    width, height = size
    image = Image.new("RGB", size, (52, 74, 58))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, height * 2 // 3, width, height], fill=(90, 84, 70))
    draw.text((4, 4), f"{index:03d}", fill=(200, 200, 200))
    if fire:
        cx, base = width // 2, height * 2 // 3 + 6
        draw.polygon([(cx - 26, base), (cx - 12, base - 46), (cx, base - 20), (cx + 10, base - 56), (cx + 26, base)], fill=(235, 80, 20))
        draw.polygon([(cx - 14, base), (cx - 4, base - 26), (cx + 4, base - 14), (cx + 12, base - 30), (cx + 16, base)], fill=(255, 200, 40))
    return image


def fire_clip(folder: Path, fps: int = 10, calm_s: float = 1.5, fire_s: float = 2.0, after_s: float = 2.5) -> Path:
    """JPEG frames 0000.jpg…: `calm_s` seconds of yard, then `fire_s` of fire, then `after_s` calm."""
    folder.mkdir(parents=True, exist_ok=True)
    total = round((calm_s + fire_s + after_s) * fps)
    for index in range(total):
        t = index / fps
        scene(index, calm_s <= t < calm_s + fire_s).save(folder / f"{index:04d}.jpg", quality=90)
    return folder


def has_fire(image: Image.Image) -> bool:
    pixels = np.asarray(image.convert("RGB")).astype(int)
    flame = (pixels[..., 0] > 200) & (pixels[..., 1] > 50) & (pixels[..., 1] < 220) & (pixels[..., 2] < 90)
    return flame.mean() > 0.02


class ScriptedBackend:
    """Answers each yes/no question about a frame by whether the fire's colours are in it."""

    runtime = {"model": "scripted"}

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.asked = 0

    def ask_batch(self, requests) -> list[Result]:
        time.sleep(self.delay_s)
        self.asked += len(requests)
        return [Result(text="Yes." if has_fire(r.messages[0].images[0]) else "No.", finish_reason="stop", input_tokens=80,
                       output_tokens=2, ttft_s=0.01, total_s=0.02, model="scripted", device="none", dtype="none", attn="none", row=row)
                for row, r in enumerate(requests)]  # fmt: skip


def wait_for(check, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"waited {timeout:g} s for {what}")


class RtspServer:
    """GStreamer's RTSP server (Debian's python3-gi) serving `frames` at `fps` on loopback."""

    def __init__(self, frames: Path | str, fps: int = 10) -> None:
        if not Path(SYSTEM_PYTHON).exists() or subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                                                              capture_output=True).returncode:  # fmt: skip
            missing_system_package("GStreamer's RTSP server for Python is not installed (scripts/setup.sh installs it)")
        self.port = free_port()
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SUPPORT / "rtsp_server.py"), str(self.port), str(frames), str(fps)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/clip"

    def __enter__(self) -> "RtspServer":
        line = self.process.stdout.readline()
        assert line.strip() == "ready", self.process.stderr.read()
        return self

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        self.process.wait(10)


class Mosquitto:
    """Debian's Mosquitto broker on a free loopback port."""

    def __init__(self, tmp_path: Path) -> None:
        if not Path(MOSQUITTO).exists():
            missing_system_package(f"no {MOSQUITTO} (scripts/setup.sh installs mosquitto)")
        self.port = free_port()
        config = tmp_path / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Mosquitto":
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, 10, "mosquitto to listen")
        return self

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        self.process.wait(10)


class Subscriber:
    """An MQTT client that keeps every message under `topic`."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, dict]] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watch-test-subscriber")
        self.client.on_connect = lambda client, *_: client.subscribe(f"{topic}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, message: self.messages.append((message.topic, json.loads(message.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def __enter__(self) -> "Subscriber":
        assert self.subscribed.wait(10), "the MQTT subscription was not confirmed"
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def webhook_app(received: list[dict], fail_first: int = 0) -> FastAPI:
    """A receiver that keeps every POSTed JSON body; the first `fail_first` POSTs get a 500."""
    app = FastAPI()
    attempts = []

    @app.post("/hook")
    async def hook(request: Request) -> JSONResponse:
        attempts.append(1)
        if len(attempts) <= fail_first:
            return JSONResponse({"error": "not now"}, status_code=500)
        received.append(await request.json())
        return JSONResponse({"ok": True})

    app.state.attempts = attempts
    return app
