"""`smolsight watch` end to end with real parts: GStreamer's RTSP server, Mosquitto, a webhook
receiver and MJPEG/snapshot servers on loopback; the scripted backend (which sees the drawn
fire) stands in for the model where a decision must be known, the tiny checkpoint where the
path must be real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse

from helpers import cli, free_port
from watch_helpers import Mosquitto, RtspServer, ScriptedBackend, Subscriber, fire_clip, scene, wait_for, webhook_app

from smolsight.engine import vision
from smolsight.errors import SmolsightError
from smolsight.serve.loopback import LoopbackServer
from smolsight.watch.events import EventTracker
from smolsight.watch.rules import RulesError, load_rules
from smolsight.watch.view import run_watch
from smolsight.watch.watcher import Watcher, checked_config

FIRE_RULE = {"name": "fire", "ask": "Is there a fire?", "answer": "yes_no", "every_s": 0.5, "on_change": True,
             "alert_when": "yes", "clear_after": 2, "cooldown_s": 60}  # fmt: skip


def write_rules(path: Path, sources: list[dict], **top) -> Path:
    path.write_text(yaml.safe_dump({"sources": sources, **top}, sort_keys=False))
    return path


def events(out_dir: Path) -> list[dict]:
    log = out_dir / "events.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def decisions(records: list[dict]) -> list[str]:
    return [r["decision"] for r in records]


# ---- the "done when" -----------------------------------------------------------------


def test_fire_over_rtsp_opens_and_closes_exactly_one_event_everywhere(tmp_path):
    frames = fire_clip(tmp_path / "clip")
    received: list[dict] = []
    with RtspServer(frames) as rtsp, Mosquitto(tmp_path) as broker, LoopbackServer(webhook_app(received)) as hook, \
            Subscriber(broker.port, "yard") as subscriber:  # fmt: skip
        rules = write_rules(tmp_path / "rules.yaml", [{"name": "yard", "url": rtsp.url, "sample_fps": 4, "rules": [FIRE_RULE]}],
                            outputs={"dir": "out", "webhook": {"url": f"{hook.url}/hook"}, "mqtt": {"host": "127.0.0.1", "port": broker.port, "topic": "yard"}})  # fmt: skip
        backend = ScriptedBackend()
        watcher = Watcher(checked_config(str(rules)), backend).start()
        try:
            wait_for(lambda: "close" in decisions(events(tmp_path / "out")), 30, "the fire event to close")
        finally:
            watcher.stop()
        wait_for(lambda: len(subscriber.messages) >= 2, 10, "two MQTT messages")
    records = [r for r in events(tmp_path / "out") if r["decision"] in ("open", "close")]
    assert decisions(records) == ["open", "close"]
    opened, closed = records
    assert opened["event"] == closed["event"] and opened["source"] == "yard" and opened["rule"] == "fire"
    assert opened["answer"] == "Yes." and opened["value"] == "yes" and closed["value"] == "no"
    assert 1.0 <= opened["frame_time"] < closed["frame_time"]
    assert (tmp_path / "out" / opened["frame"]).stat().st_size > 1000  # the JPEG snapshot of the fire
    assert [(r["decision"], r["event"]) for r in received] == [("open", opened["event"]), ("close", opened["event"])]
    assert [(topic, m["decision"]) for topic, m in subscriber.messages] == [("yard/yard/fire", "open"), ("yard/yard/fire", "close")]
    counts = watcher.state()["sources"][0]["counts"]
    assert counts["seen"] > counts["asked"] > 0 and counts["skipped"] > 0  # the gate and the schedule skipped frames
    assert not (tmp_path / "out" / "undelivered.jsonl").read_text()


def test_the_same_pipeline_with_the_tiny_checkpoint(tmp_path, tiny_checkpoint):
    """`smolsight watch` itself, over RTSP, with a real model: its answers are noise, the path is real."""
    frames = fire_clip(tmp_path / "clip", calm_s=1, fire_s=1, after_s=1)
    with RtspServer(frames) as rtsp:
        rules = write_rules(tmp_path / "rules.yaml", [{"name": "yard", "url": rtsp.url, "sample_fps": 2,
                            "rules": [FIRE_RULE, {"name": "count", "ask": "How many fires?", "answer": "number", "every_s": 1}]}],
                            outputs={"dir": "out"})  # fmt: skip
        outcome = cli("watch", str(rules), "-m", tiny_checkpoint, "--device", "cpu", "-q", "--for", "5")
    assert outcome.returncode == 0, outcome.stderr
    summary = next(line for line in outcome.stderr.splitlines() if line.startswith("watched 1 source(s)"))
    asked = int(summary.split(" asked")[0].rsplit(", ", 1)[1])
    assert asked >= 2 and "CPU-s per camera per minute" in summary
    answers = [r for r in events(tmp_path / "out") if r["rule"] == "count"]
    assert answers and all(r["decision"] == "answer" and isinstance(r["answer"], str) for r in answers)


# ---- rules and sources -------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("sources: []\n", "rules.yaml:1: sources: must list at least one entry"),
    ("sources:\n  - name: a\n    url: CLIP\n    rules:\n      - name: r\n        ask: Fire?\n        every_s: 2\n        alert_when: maybe\n",
     "rules.yaml:8: sources[0].rules[0].alert_when: a yes_no rule alerts on yes or on no, not 'maybe'"),
    ("sources:\n  - name: a\n    url: CLIP\n    rules:\n      - name: r\n        ask: People?\n        answer: number\n        every_s: 2\n"
     "        alert_when: lots\n", 'rules.yaml:9: sources[0].rules[0].alert_when: a number rule alerts on a threshold such as "> 3"'),
    ("sources:\n  - name: a\n    url: CLIP\n    rules:\n      - name: r\n        ask: Fire?\n", "rules.yaml:5: sources[0].rules[0]: say when to ask"),
    ("sources:\n  - name: a\n    url: CLIP\n    sampel_fps: 3\n    rules:\n      - name: r\n        ask: Fire?\n        every_s: 1\n",
     "rules.yaml:4: sources[0].sampel_fps: unknown field"),
    ("sources:\n  - name: a\n    url: CLIP\n    rules:\n      - name: r\n        ask: Fire?\n        every_s: -1\n",
     "rules.yaml:7: sources[0].rules[0].every_s: must be more than zero, not -1"),
    ("sources:\n  - name: a\n    url: [CLIP\n", "rules.yaml:4:1: not valid YAML: expected ',' or ']'"),  # as suites say it
])  # fmt: skip
def test_bad_rules_fail_with_the_line_and_the_field(tmp_path, text, message):
    clip = fire_clip(tmp_path / "clip", calm_s=0.2, fire_s=0, after_s=0)
    (tmp_path / "rules.yaml").write_text(text.replace("CLIP", str(clip)))
    with pytest.raises(RulesError) as error:
        load_rules(tmp_path / "rules.yaml")
    assert str(error.value).startswith(f"{tmp_path}/{message}")
    outcome = cli("watch", str(tmp_path / "rules.yaml"), "--check")
    assert outcome.returncode == 1 and outcome.stderr.count("\n") == 1 and message.split(": ", 1)[1] in outcome.stderr


@pytest.mark.parametrize("url, message", [
    ("/nowhere/clip.mp4", "source 'cam': /nowhere/clip.mp4: no such file, folder or device"),
    ("/dev/video97", "source 'cam': no camera device /dev/video97 on this machine"),
    ("ftp://camera.local/x.jpg", "source 'cam': ftp://camera.local/x.jpg: a ftp:// URL cannot be watched"),
    ("rtsp://admin:secret@10.0.0.9/stream", "source 'cam': rtsp://admin:secret@10.0.0.9/stream: host '10.0.0.9' is not on the URL allow-list"),
])  # fmt: skip
def test_bad_sources_fail_before_the_model_loads_with_one_line(tmp_path, url, message):
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "cam", "url": url, "rules": [FIRE_RULE]}], urls={"allow_list": ["camera.local"]})
    outcome = cli("watch", str(rules), "-m", "/no/such/model")  # the model would fail to load: it is never reached
    assert outcome.returncode == 1
    assert outcome.stderr.startswith(f"error: {message}") and outcome.stderr.count("\n") == 1


def test_events_open_update_close_and_cool_down():
    tracker = EventTracker("cam/fire", clear_after=2, cooldown_s=10)
    steps = [(False, 0), (True, 1), (True, 2), (False, 3), (True, 4), (False, 5), (False, 6), (True, 8), (True, 17), (False, 18)]
    seen = [tracker.update(alert, t)[0] for alert, t in steps]
    assert seen == ["quiet", "open", "update", "update", "update", "update", "close", "cooldown", "open", "update"]
    assert tracker.current.id == "cam/fire/2"


# ---- cheap frames --------------------------------------------------------------------------------


def test_unchanged_frames_are_skipped_and_reuse_vision_features(tmp_path, engine):
    folder = tmp_path / "still"
    folder.mkdir()
    for index in range(6):  # the same view, a counter ticking in a corner: under the gate's threshold
        scene(index, fire=False, size=(256, 192)).save(folder / f"{index:04d}.png")
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "still", "url": str(folder), "sample_fps": 1,
                        "rules": [dict(FIRE_RULE, every_s=2, max_new_tokens=2), {"name": "moved", "ask": "Did it move?", "on_change": True}]}],
                        outputs={"dir": "out"})  # fmt: skip
    before = set(engine.vision_cache)
    watcher = Watcher(checked_config(str(rules)), engine).start()
    assert watcher.wait(60)
    watcher.stop()
    counts = watcher.state()["sources"][0]["counts"]
    assert counts == {"seen": 6, "skipped": 3, "asked": 3, "dropped": 0}  # t=0 (changed, both rules), t=2 and t=4 (schedule)
    assert len(set(engine.vision_cache) - before) == 1  # four questions, one pass of the vision encoder
    assert 'smolsight_watch_vision_reused_total{source="still"} 2.0' in metrics_text(watcher)


def metrics_text(watcher: Watcher) -> str:
    from prometheus_client import generate_latest

    return generate_latest(watcher.metrics.registry).decode()


# ---- other sources ---------------------------------------------------------------------------------


def mjpeg_app(frames: list[bytes]) -> FastAPI:
    """A camera's two faces: an MJPEG stream (the clip, looped, 10 frames a second) and a snapshot URL."""
    app = FastAPI()

    async def parts():
        import asyncio

        for index in range(600):  # bounded: a minute of stream at most
            yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(frames[index % len(frames)])
            yield frames[index % len(frames)] + b"\r\n"
            await asyncio.sleep(0.1)

    @app.get("/stream.mjpg")
    async def stream() -> StreamingResponse:
        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame")

    @app.get("/snapshot.jpg")
    async def snapshot() -> Response:
        return Response(frames[len(frames) // 2], media_type="image/jpeg")

    return app


def test_mjpeg_stream_and_snapshot_url(tmp_path):
    clip = fire_clip(tmp_path / "clip", calm_s=1, fire_s=1, after_s=1)
    frames = [path.read_bytes() for path in sorted(clip.iterdir())]
    with LoopbackServer(mjpeg_app(frames)) as camera:
        rules = write_rules(tmp_path / "rules.yaml", [
            {"name": "stream", "url": f"{camera.url}/stream.mjpg", "sample_fps": 5, "rules": [dict(FIRE_RULE, cooldown_s=0)]},
            {"name": "still", "url": f"{camera.url}/snapshot.jpg", "kind": "snapshot", "sample_fps": 5, "rules": [FIRE_RULE]},
        ], outputs={"dir": "out"})  # fmt: skip
        watcher = Watcher(checked_config(str(rules)), ScriptedBackend()).start()
        try:
            wait_for(lambda: {"stream", "still"} <= {r["source"] for r in events(tmp_path / "out") if r["decision"] == "open"}, 20,
                     "both sources to see the fire")  # fmt: skip
        finally:
            watcher.stop()
    still = watcher.state()["sources"][1]
    assert still["status"] == "live" and still["counts"]["seen"] >= 2


# ---- faults ---------------------------------------------------------------------------------------------


def test_dead_source_slow_model_and_failing_webhook_lose_nothing(tmp_path):
    clip = fire_clip(tmp_path / "clip", calm_s=0.5, fire_s=1, after_s=1)
    received: list[dict] = []
    app = webhook_app(received, fail_first=1)
    with LoopbackServer(app) as hook:
        rules = write_rules(tmp_path / "rules.yaml", [
            {"name": "dead", "url": "rtsp://127.0.0.1:9/nothing", "rules": [FIRE_RULE]},
            {"name": "clip", "url": str(clip), "sample_fps": 4, "rules": [FIRE_RULE]},
        ], outputs={"dir": "out", "webhook": {"url": f"{hook.url}/hook", "retries": 2, "backoff_s": 0.05, "timeout_s": 2}})  # fmt: skip
        watcher = Watcher(checked_config(str(rules)), ScriptedBackend(delay_s=0.2)).start()
        try:
            assert wait_for(lambda: watcher.state()["sources"][1]["status"] == "ended", 30, "the clip to end")
            wait_for(lambda: len(received) == 2, 10, "the webhook to get both records")
            dead = watcher.state()["sources"][0]
        finally:
            watcher.stop()
    assert dead["status"] == "reconnecting" and "retrying in" in dead["error"] and dead["counts"]["seen"] == 0
    assert decisions([r for r in events(tmp_path / "out") if r["decision"] != "update"]) == ["open", "close"]
    assert decisions(received) == ["open", "close"] and len(app.state.attempts) == 3  # the first POST failed and was retried
    assert 'smolsight_watch_errors_total{kind="source",source="dead"}' in metrics_text(watcher)


def test_a_webhook_that_never_answers_keeps_its_records_as_undelivered(tmp_path):
    clip = fire_clip(tmp_path / "clip", calm_s=0.5, fire_s=1, after_s=1)
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "clip", "url": str(clip), "sample_fps": 4, "rules": [FIRE_RULE]}],
                        outputs={"dir": "out", "webhook": {"url": "http://127.0.0.1:9/hook", "retries": 1, "backoff_s": 0.05}})  # fmt: skip
    watcher = Watcher(checked_config(str(rules)), ScriptedBackend()).start()
    assert watcher.wait(30)
    watcher.stop()
    undelivered = [json.loads(line) for line in (tmp_path / "out" / "undelivered.jsonl").read_text().splitlines()]
    assert [(u["output"], u["record"]["decision"]) for u in undelivered] == [("webhook", "open"), ("webhook", "close")]
    assert "after 2 tries" in undelivered[0]["error"]


@pytest.mark.isolated
def test_sigterm_stops_watching_closes_the_open_event_and_flushes(tmp_path):
    clip = fire_clip(tmp_path / "clip", calm_s=0.5, fire_s=30, after_s=0)  # the fire is still burning when SIGTERM comes
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "clip", "url": str(clip), "sample_fps": 4, "realtime": True, "rules": [FIRE_RULE]}],
                        outputs={"dir": "out"})  # fmt: skip
    watcher = Watcher(checked_config(str(rules)), ScriptedBackend())
    # SIGTERM to the main thread, where Python runs signal handlers: a process-wide kill may land on
    # any thread, including a native library's worker (the suite loads OpenVINO, onnxruntime …).
    main = threading.main_thread().ident
    wait_then_signal = threading.Thread(target=lambda: (wait_for(lambda: events(tmp_path / "out"), 20, "the event to open"),
                                                        signal.pthread_kill(main, signal.SIGTERM)))  # fmt: skip
    wait_then_signal.start()
    started = time.monotonic()
    cost = run_watch(watcher, duration=30, live=False, out=open(os.devnull, "w"))
    wait_then_signal.join()
    assert time.monotonic() - started < 15 and cost.alerts == 1
    records = events(tmp_path / "out")
    assert records[0]["decision"] == "open" and records[-1]["decision"] == "close" and records[-1]["reason"] == "watching stopped"
    assert records[-1]["event"] == records[0]["event"]


@pytest.mark.skipif(not vision.installed(), reason="the openvino extra is not installed (pip install 'smolsight[openvino]')")
def test_a_watch_process_with_openvino_vision_exits_cleanly_on_sigterm(tmp_path, tiny_checkpoint):
    """`smolsight watch` as a real process, its vision encoder on OpenVINO (native worker threads
    running), stopped by a process-wide SIGTERM as `docker stop` or systemd send it: it must stop,
    flush and print its summary, with exit status 0 and no crash inside a native library."""
    clip = fire_clip(tmp_path / "clip", calm_s=0.5, fire_s=60, after_s=0)
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "clip", "url": str(clip), "sample_fps": 4, "realtime": True, "rules": [FIRE_RULE]}],
                        outputs={"dir": "out"})  # fmt: skip
    port = free_port()
    command = [sys.executable, "-m", "smolsight", "watch", str(rules), "--model", tiny_checkpoint, "--dtype", "float32",
               "--fast", "default,vision=openvino", "--metrics-port", str(port)]  # fmt: skip

    def asked() -> bool:
        return re.search(r'^smolsight_watch_frames_asked_total\{source="clip"\} [1-9]', metrics(port), re.M) is not None

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: process.poll() is not None or asked(), 120, "the model to be asked about a frame")
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "Vision on OpenVINO" in stderr and "events in" in stderr, stderr[-3000:]


def metrics(port: int) -> str:
    """The watch process's Prometheus page, or nothing while it is not up yet."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return ""


def test_mqtt_without_paho_is_one_clear_line(tmp_path, monkeypatch):
    import sys

    clip = fire_clip(tmp_path / "clip", calm_s=0.2, fire_s=0, after_s=0)
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "clip", "url": str(clip), "rules": [FIRE_RULE]}],
                        outputs={"mqtt": {"host": "127.0.0.1"}})  # fmt: skip
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(SmolsightError, match=r"needs paho-mqtt: pip install 'smolsight\[watch\]'"):
        checked_config(str(rules))


def test_a_rule_reads_a_display_with_ocr_and_alerts_on_its_number(tmp_path, engine):
    """`ocr: answer` on a number rule: the real OCR model reads the display, the number decides."""
    from PIL import ImageDraw

    from smolsight.evals.synth import font

    folder = tmp_path / "display"
    folder.mkdir()
    for index, reading in enumerate((42, 42, 87)):
        image = Image.new("RGB", (320, 120), (235, 235, 230))
        ImageDraw.Draw(image).text((40, 25), f"{reading} °C", fill=(10, 10, 10), font=font(56))
        image.save(folder / f"{index:04d}.png")
    rule = {"name": "hot", "ask": "What temperature does the display show?", "answer": "number", "on_change": True,
            "alert_when": "> 80", "ocr": "answer"}  # fmt: skip
    source = {"name": "oven", "url": str(folder), "sample_fps": 1, "change_threshold": 0.002, "rules": [rule]}
    rules = write_rules(tmp_path / "rules.yaml", [source], outputs={"dir": "out"})
    watcher = Watcher(checked_config(str(rules)), engine).start()
    assert watcher.wait(60)
    watcher.stop()
    (opened,) = [r for r in events(tmp_path / "out") if r["decision"] == "open"]  # 42 °C opened nothing
    assert opened["answer"] == "87 °C" and opened["value"] == 87 and opened["frame_time"] == 2.0


def test_a_bad_ocr_value_is_named(tmp_path):
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "cam", "url": str(tmp_path), "rules": [
        {"name": "r", "ask": "Hot?", "on_change": True, "ocr": "yes"}]}])  # fmt: skip
    with pytest.raises(SmolsightError, match="ocr: must be true, prompt or answer, not 'yes'"):
        checked_config(str(rules))


def test_an_unknown_preset_is_refused_by_check(tmp_path):
    rules = write_rules(tmp_path / "rules.yaml", [{"name": "cam", "url": str(tmp_path), "rules": [
        {"name": "r", "ask": "Hot?", "on_change": True}]}], preset="fastest")  # fmt: skip
    run = cli("watch", str(rules), "--check")
    assert run.returncode == 1 and "preset: must be one of precise, seed, creative, not 'fastest'" in run.stderr
