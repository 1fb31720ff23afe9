"""The HTTP server, live on loopback, driven by the official `openai` client and plain HTTP.

The tiny checkpoint is random, so answers are noise; what is checked is that the server gives
exactly what the engine gives, in OpenAI's shapes, and that limits, errors, batching,
cancellation and shutdown behave.
"""

from __future__ import annotations

import base64
import http.server
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from helpers import free_port, picture
from PIL import Image
from test_media import write_video

from smolsight.engine import Chunk
from smolsight.engine.fetch import UrlPolicy, fetch
from smolsight.errors import LimitError, MediaError
from smolsight.serve.app import create_app
from smolsight.serve.loopback import LoopbackServer
from smolsight.serve.settings import ServerSettings

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = dict(max_tokens=160, max_image_pixels=1_000_000, max_body_mb=2, max_input_tokens=1500)


def data_uri(image=None, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    (image or picture()).save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(text: str = "What is in the picture?", url: str | None = None, detail: str = "low") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url or data_uri(), "detail": detail}}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="session")
def server(engine):
    with LoopbackServer(create_app(engine, ServerSettings(api_keys=(KEY,), **LIMITS))) as live:
        yield live


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="session")
def model_id(client) -> str:
    return client.models.list().data[0].id


def metric(server, name: str, **labels) -> float:
    """One sample from /metrics (0 if absent)."""
    text = httpx.get(f"{server.url}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# ---- answers -------------------------------------------------------------------------------


def test_non_streaming_answer_is_the_engines(client, engine, model_id):
    reply = client.chat.completions.create(model=model_id, messages=image_message(), max_tokens=12)
    direct = engine.ask(picture(), "What is in the picture?", max_new_tokens=12, split=False)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == model_id
    assert choice.message.role == "assistant" and choice.message.content == direct.text
    assert choice.finish_reason == direct.finish_reason
    assert reply.usage.prompt_tokens == direct.input_tokens and reply.usage.completion_tokens == direct.output_tokens
    assert reply.usage.total_tokens == direct.input_tokens + direct.output_tokens
    timings = reply.model_extra["timings"]
    assert 0 <= timings["queue_s"] <= timings["ttft_s"] <= timings["total_s"]


def test_streaming_sends_the_engines_pieces_then_usage(client, engine, model_id):
    stream = client.chat.completions.create(
        model=model_id, messages=image_message(), max_completion_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    direct = list(engine.stream(picture(), "What is in the picture?", max_new_tokens=16, split=False))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(e.text for e in direct if isinstance(e, Chunk))
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == direct[-1].finish_reason
    assert finish[0].model_extra["timings"]["ttft_s"] > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == direct[-1].output_tokens
    assert len({c.id for c in chunks}) == 1


def test_stream_is_server_sent_events_ending_in_done(server, model_id):
    body = {"model": model_id, "messages": image_message(), "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"] is None  # no usage chunk unless asked for


def test_repetition_is_a_finish_reason(client, engine, model_id):
    """The loop guard's `repetition` reaches the client, with the trimmed answer."""
    for seed, detail in itertools.product(range(4), ("high", "low")):
        direct = engine.ask(picture(seed=seed), "Describe.", max_new_tokens=150, split=detail == "high")
        if direct.finish_reason == "repetition":
            break
    else:
        pytest.fail("the tiny model looped on none of the inputs")
    messages = image_message("Describe.", url=data_uri(picture(seed=seed)), detail=detail)
    reply = client.chat.completions.create(model=model_id, messages=messages, max_tokens=150)
    assert reply.choices[0].finish_reason == "repetition" and reply.choices[0].message.content == direct.text
    unguarded = client.chat.completions.create(model=model_id, messages=messages, max_tokens=150, extra_body={"preset": "seed"})
    assert unguarded.usage.completion_tokens > reply.usage.completion_tokens


def test_system_message_task_and_knobs(client, model_id):
    messages = [{"role": "system", "content": "You count things."}, *image_message("")]
    counted = client.chat.completions.create(model=model_id, messages=messages, max_tokens=4, extra_body={"task": "count"})
    plain = client.chat.completions.create(model=model_id, messages=[messages[0], *image_message("x")], max_tokens=4)
    assert counted.usage.prompt_tokens > plain.usage.prompt_tokens + 5  # the count instruction was added
    sampled = client.chat.completions.create(
        model=model_id, messages=image_message(), max_tokens=8, temperature=0.8, top_p=0.9, seed=3,
        frequency_penalty=0.5, presence_penalty=0.5, stop=["\n"], extra_body={"repetition_penalty": 1.2, "top_k": 40},
    )  # fmt: skip
    again = client.chat.completions.create(
        model=model_id, messages=image_message(), max_tokens=8, temperature=0.8, top_p=0.9, seed=3,
        frequency_penalty=0.5, presence_penalty=0.5, stop=["\n"], extra_body={"repetition_penalty": 1.2, "top_k": 40},
    )  # fmt: skip
    assert sampled.choices[0].message.content == again.choices[0].message.content


def test_video_url_part(client, model_id, tmp_path):
    clip = open(write_video(tmp_path / "clip.mp4", frames=8, fps=4), "rb").read()
    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What moves?"}]
    reply = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}], max_tokens=4)
    assert reply.usage.prompt_tokens > 50 and reply.choices[0].message.content


def test_models_health_metrics_and_schema(server, client, model_id):
    assert [m.id for m in client.models.list().data] == [model_id]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    response = httpx.get(f"{server.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    for name in ("smolsight_requests_total", "smolsight_queue_depth", "smolsight_batch_size_bucket", "smolsight_time_to_first_token_seconds_bucket",
                 "smolsight_request_latency_seconds_bucket", "smolsight_generated_tokens_total"):  # fmt: skip
        assert name in response.text
    schema = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert list(schema)[:2] == ["messages", "model"] and "description" in schema["preset"]


# ---- batching, queueing, cancellation ------------------------------------------------------


def test_32_concurrent_requests_are_batched(server, client, model_id):
    batches_before = metric(server, "smolsight_batch_size_count")

    def ask(i: int):
        return client.chat.completions.create(model=model_id, messages=image_message(url=data_uri(picture(seed=i))), max_tokens=6, seed=i)

    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(ask, range(32)))
    assert all(r.choices[0].message.content is not None and r.usage.completion_tokens >= 1 for r in replies)
    batches = metric(server, "smolsight_batch_size_count") - batches_before
    assert batches < 32  # some batch held more than one request
    assert metric(server, "smolsight_batch_size_bucket", le="1.0") < metric(server, "smolsight_batch_size_count")
    assert metric(server, "smolsight_requests_total", endpoint="/v1/chat/completions", status="200") >= 32


def test_a_short_request_joins_a_long_one_and_finishes_first(engine):
    """Continuous batching: a 4-token request sent while a 2000-token one streams is answered
    while the long one is still generating; a batch-at-a-time server would answer it only after
    the long one's last chunk."""
    with LoopbackServer(create_app(engine, ServerSettings(max_tokens=2000))) as live:
        url = f"{live.url}/v1/chat/completions"
        received = []

        def read_long() -> None:
            with httpx.stream("POST", url, json=long_request(), timeout=120) as busy:
                received.extend(line for line in busy.iter_lines() if line.startswith("data: {"))

        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(read_long)
            deadline = time.monotonic() + 30
            while not received:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            short = httpx.post(url, json={**long_request(4), "stream": False}, timeout=60)
            at_short = len(received)
            long.result()
        assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 4
        assert len(received) > 100 and at_short < len(received) / 2, (at_short, len(received))


@pytest.fixture(scope="module")
def one_at_a_time(engine):
    """A server that runs one request at a time and queues one more."""
    settings = ServerSettings(max_batch_size=1, max_queue=1, max_tokens=2000)
    with LoopbackServer(create_app(engine, settings)) as live:
        yield live


def long_request(max_tokens: int = 2000) -> dict:
    return {"messages": image_message(), "max_tokens": max_tokens, "preset": "seed", "stream": True}


def test_full_queue_answers_429_with_retry_after(one_at_a_time):
    url = f"{one_at_a_time.url}/v1/chat/completions"
    with ThreadPoolExecutor(1) as pool:
        with httpx.stream("POST", url, json=long_request(), timeout=60) as busy:
            lines = busy.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # generating: the worker is busy
            waiting = pool.submit(httpx.post, url, json={**long_request(4), "stream": False}, timeout=60)
            deadline = time.monotonic() + 20
            while httpx.get(f"{one_at_a_time.url}/health").json()["queue_depth"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            refused = httpx.post(url, json={**long_request(4), "stream": False})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "queue_full"
        assert waiting.result().status_code == 200  # closing the busy stream cancelled it; the queued one ran


def test_disconnect_cancels_generation(one_at_a_time):
    cancelled = metric(one_at_a_time, "smolsight_finished_total", reason="cancelled")
    with httpx.stream("POST", f"{one_at_a_time.url}/v1/chat/completions", json=long_request(), timeout=60) as response:
        lines = response.iter_lines()
        next(lines), next(lines)
    deadline = time.monotonic() + 10
    while metric(one_at_a_time, "smolsight_finished_total", reason="cancelled") == cancelled:
        assert time.monotonic() < deadline, "generation went on after the client left"
        time.sleep(0.05)
    tokens = metric(one_at_a_time, "smolsight_generated_tokens_total")
    started = time.perf_counter()
    reply = httpx.post(f"{one_at_a_time.url}/v1/chat/completions", json={**long_request(4), "stream": False}, timeout=60)
    assert reply.status_code == 200 and time.perf_counter() - started < 20
    assert tokens < 1000  # the abandoned 2000-token request stopped early


def test_queued_time_counts_in_time_to_first_token(one_at_a_time):
    url = f"{one_at_a_time.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=long_request(), timeout=60) as busy:
        lines = busy.iter_lines()
        next(lines)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(httpx.post, url, json={**long_request(4), "stream": False}, timeout=60)
            deadline = time.monotonic() + 30
            while httpx.get(f"{one_at_a_time.url}/health").json()["queue_depth"] < 1:  # it has arrived and waits
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(1.0)
            busy.close()
            timings = queued.result().json()["timings"]
    assert timings["queue_s"] >= 1.0 and timings["ttft_s"] > timings["queue_s"]


# ---- bad input -----------------------------------------------------------------------------


def big_image_uri() -> str:
    return data_uri(picture(1200, 1000))  # 1.2 megapixels, over the 1 MP limit; small as a PNG


BAD_REQUESTS = [
    ("malformed JSON", b'{"messages": [', AUTH, 400, "invalid_json"),
    ("bad base64", {"messages": image_message(url="data:image/png;base64,@@not-base64@@")}, AUTH, 400, "invalid_media"),
    ("not an image", {"messages": image_message(url="data:image/png;base64," + base64.b64encode(b"hello " * 40).decode())}, AUTH, 400, "invalid_media"),
    ("too many pixels", {"messages": image_message(url=big_image_uri())}, AUTH, 413, "limit_exceeded"),
    ("body too large", {"messages": image_message("x" * 3 * 1024 * 1024)}, AUTH, 413, "limit_exceeded"),
    ("too many images", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}] * 9}]}, AUTH, 413, "limit_exceeded"),
    ("unknown part type", {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]}, AUTH, 422, "invalid_value"),
    ("unknown field", {"messages": image_message(), "temprature": 0.5}, AUTH, 422, "invalid_value"),
    ("unenforceable JSON schema", {"messages": image_message(), "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}}, AUTH, 400, "invalid_request"),
    ("forced tool call", {"messages": image_message(), "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, AUTH, 400, "invalid_request"),
    ("boolean max_tokens", {"messages": image_message(), "max_tokens": True}, AUTH, 422, "invalid_value"),
    ("string max_tokens", {"messages": image_message(), "max_tokens": "10"}, AUTH, 422, "invalid_value"),
    ("string stream", {"messages": image_message(), "stream": "yes"}, AUTH, 422, "invalid_value"),
    ("too many tokens", {"messages": image_message(), "max_tokens": 100_000}, AUTH, 400, "invalid_request"),
    ("prompt too long", {"messages": image_message("word " * 3000)}, AUTH, 413, "limit_exceeded"),
    ("empty prompt", {"messages": image_message("")}, AUTH, 400, "invalid_request"),
    ("last message not the user's", {"messages": [*image_message(), {"role": "assistant", "content": "hi"}]}, AUTH, 400, "invalid_request"),
    ("missing key", {"messages": image_message()}, {}, 401, "invalid_api_key"),
    ("wrong key", {"messages": image_message()}, {"Authorization": "Bearer nope"}, 401, "invalid_api_key"),
    ("wrong key and bad JSON", b'{"messages": [', {"Authorization": "Bearer nope"}, 401, "invalid_api_key"),
    ("http URL, fetching off", {"messages": image_message(url="http://example.com/a.png")}, AUTH, 400, "invalid_media"),
    ("file path", {"messages": image_message(url="/etc/passwd")}, AUTH, 400, "invalid_media"),
    ("file URL", {"messages": image_message(url="file:///etc/hostname")}, AUTH, 400, "invalid_media"),
    ("unknown model", {"model": "gpt-4o", "messages": image_message()}, AUTH, 404, "model_not_found"),
    ("bad top_p", {"messages": image_message(), "temperature": 1, "top_p": 0}, AUTH, 400, "invalid_request"),
]


@pytest.mark.parametrize("body, headers, status, code", [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_gets_its_status_and_the_server_keeps_serving(server, body, headers, status, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.url}/v1/chat/completions", content=content, headers={**headers, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["code"] == code
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_chunked_body_over_the_limit_is_refused(server):
    pieces = (b" " * 256 * 1024 for _ in range(12))  # 3 MB without a Content-Length
    response = httpx.post(f"{server.url}/v1/chat/completions", content=pieces, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "limit_exceeded"


def test_openai_client_raises_its_own_errors(server, client, model_id):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=image_message())
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 8"):
        client.chat.completions.create(model=model_id, messages=image_message(), n=9)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.chat.completions.create(model=model_id, messages=image_message(), extra_body={"max_tokens": "10"})
    with pytest.raises(openai.BadRequestError, match="over this server's limit"):
        client.chat.completions.create(model=model_id, messages=image_message(), max_tokens=LIMITS["max_tokens"] + 1)


# ---- fetching URLs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def picture_site():
    """A loopback web server with one PNG and one redirect."""
    png = base64.b64decode(data_uri().split(",", 1)[1])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/scene.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            else:
                self.send_response(302)
                self.send_header("Location", "/scene.png")
                self.end_headers()

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}", png
    site.shutdown()


def test_url_fetching_policy(picture_site):
    base, png = picture_site
    with pytest.raises(MediaError, match="does not fetch URLs"):
        fetch(f"{base}/scene.png", UrlPolicy(allow_fetch=False))
    with pytest.raises(MediaError, match="non-public address 127.0.0.1"):
        fetch(f"{base}/scene.png", UrlPolicy(allow_fetch=True, allow_private=False))
    with pytest.raises(MediaError, match="non-public"):
        fetch("http://169.254.169.254/latest/meta-data", UrlPolicy(allow_fetch=True, allow_private=False))
    with pytest.raises(MediaError, match="allow-list"):
        fetch(f"{base}/scene.png", UrlPolicy(allow_fetch=True, allow_list=("images.example.com",), allow_private=True))
    allowed = UrlPolicy(allow_fetch=True, allow_list=("127.0.0.1",), allow_private=True)
    assert fetch(f"{base}/scene.png", allowed) == png
    with pytest.raises(MediaError, match="HTTP 302"):
        fetch(f"{base}/elsewhere", allowed)
    with pytest.raises(LimitError):
        fetch(f"{base}/scene.png", UrlPolicy(allow_fetch=True, allow_private=True, max_bytes=100))


def test_server_fetches_allowed_urls(engine, picture_site):
    base, _ = picture_site
    settings = ServerSettings(max_tokens=8, allow_url_fetch=True, url_allow_list=("127.0.0.1",), allow_private_urls=True)
    with LoopbackServer(create_app(engine, settings)) as live:
        reply = httpx.post(f"{live.url}/v1/chat/completions", json={"messages": image_message(url=f"{base}/scene.png"), "max_tokens": 4}, timeout=60)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1


# ---- fuzzing and the real command ----------------------------------------------------------


def test_schema_fuzzing_finds_no_server_error(engine, tmp_path):
    """schemathesis generates valid and invalid requests from /openapi.json; none may get a 5xx."""
    settings = ServerSettings(max_tokens=4, max_input_tokens=1024, max_image_pixels=1_000_000)
    with LoopbackServer(create_app(engine, settings)) as live:
        started = time.perf_counter()
        run = subprocess.run(
            ["schemathesis", "run", f"{live.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "30",
             "--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", "1", "--no-shrink", "--request-timeout", "30"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        assert httpx.get(f"{live.url}/health").status_code == 200
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert elapsed < 60


def test_serve_command_drains_on_sigterm(tiny_checkpoint):
    """`smolsight serve` starts; on SIGTERM it finishes the stream in flight and takes no new connections."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from smolsight.cli import main; main()", "serve", "--model", tiny_checkpoint, "--port", str(port), "--dtype", "float32", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "SMOLSIGHT_API_KEY": KEY})
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() is not None else "no start"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {**long_request(60), "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
            lines = response.iter_lines()
            next(lines)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/health")
            events = [line for line in lines if line]
        usage = json.loads(events[-2][6:])["usage"]
        assert events[-1] == "data: [DONE]" and usage["completion_tokens"] == 60
        assert process.wait(30) in (0, -signal.SIGTERM)
        output = process.stdout.read()
        assert "GET /health" not in output and "POST /v1/chat" not in output and "Uvicorn running" not in output, output  # --quiet
    finally:
        process.kill()


# ---- our own faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status, code, words",
    [
        (RuntimeError("boom"), 500, "server_error", "details are in the server's log"),
        (MemoryError(), 503, "out_of_memory", "ran out of memory"),
    ],
)
def test_our_own_faults_are_5xx_not_the_inputs_fault(server, engine, monkeypatch, capfd, fault, status, code, words):
    """A crash while preparing a request (out of memory included) is the server's fault: a 5xx
    in OpenAI's shape that blames nobody's input, the traceback in the log; the server goes on."""
    prepare = engine.prepare

    def failing(request):
        if "CRASH" in request.messages[-1].text:
            raise fault
        return prepare(request)

    monkeypatch.setattr(engine, "prepare", failing)
    reply = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=60,
                       json={"messages": image_message("CRASH please"), "max_tokens": 2})  # fmt: skip
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code and words in error["message"] and error["type"] == "server_error"
    assert "Traceback" in capfd.readouterr().err
    ok = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=60, json={"messages": image_message(), "max_tokens": 2})
    assert ok.status_code == 200


# ---- every OpenAI request shape ----------------------------------------------------------


def test_the_openai_clients_follow_up_turn_is_accepted(client, model_id):
    """`messages.append(reply.choices[0].message)` echoes `refusal`, `tool_calls`… as null."""
    messages = image_message("What is in the picture?")
    first = client.chat.completions.create(model=model_id, messages=messages, max_tokens=4)
    messages.append(first.choices[0].message.model_dump())
    messages.append({"role": "user", "content": "And what colour is it?"})
    assert messages[1]["refusal"] is None and "tool_calls" in messages[1]
    second = client.chat.completions.create(model=model_id, messages=messages, max_tokens=4)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens and second.choices[0].message.content


def test_every_message_shape_and_ignored_field_is_accepted(client, model_id):
    uri = data_uri()
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": uri}, {"type": "text", "text": "Count the cars."}]},
        {"role": "assistant", "content": None, "refusal": None, "audio": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "count", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3 cars"},
        {"role": "user", "content": "So how many?"},
    ]  # fmt: skip
    ignored = {"store": True, "metadata": {"site": "plant-2"}, "parallel_tool_calls": False, "service_tier": "auto",
               "reasoning_effort": "low", "modalities": ["text"], "user": "op-7", "prompt_cache_key": "k", "safety_identifier": "s",
               "tools": [{"type": "function", "function": {"name": "count"}}], "tool_choice": "auto",
               "stream_options": {"include_usage": True, "include_obfuscation": False}, "response_format": {"type": "text"}}  # fmt: skip
    reply = client.chat.completions.create(model=model_id, messages=messages, max_tokens=4, temperature=0, top_p=0,
                                           n=1, logprobs=False, extra_body={k: v for k, v in ignored.items()})  # fmt: skip
    assert reply.choices[0].finish_reason in ("stop", "length", "repetition") and reply.usage.prompt_tokens > 60


def test_a_bare_image_url_string_reads_as_the_object_form(client, model_id):
    uri = data_uri()
    bare = client.chat.completions.create(model=model_id, max_tokens=3, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": uri}, {"type": "text", "text": "Describe."}]}])  # fmt: skip
    full = client.chat.completions.create(model=model_id, max_tokens=3, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "Describe."}]}])  # fmt: skip
    assert (bare.usage.prompt_tokens, bare.choices[0].message.content) == (full.usage.prompt_tokens, full.choices[0].message.content)


def test_cors_preflight_only_when_an_origin_is_allowed(engine):
    preflight = {"Origin": "https://hmi.plant.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    with LoopbackServer(create_app(engine, ServerSettings(api_keys=(KEY,), cors_origins=("https://hmi.plant.example",)))) as live:
        answer = httpx.options(f"{live.url}/v1/chat/completions", headers=preflight)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://hmi.plant.example"
        assert "POST" in answer.headers["access-control-allow-methods"]
        models = httpx.get(f"{live.url}/v1/models", headers={**AUTH, "Origin": "https://hmi.plant.example"})
        assert models.headers["access-control-allow-origin"] == "https://hmi.plant.example"
        other = httpx.options(f"{live.url}/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    with LoopbackServer(create_app(engine, ServerSettings())) as closed:
        answer = httpx.options(f"{closed.url}/v1/chat/completions", headers=preflight)
        assert answer.status_code == 405 and "access-control-allow-origin" not in answer.headers


# ---- limits before work --------------------------------------------------------------------


@pytest.fixture(scope="module")
def roomy(engine):
    """Default limits, but bodies up to 40 MB: what is refused here is refused by the limits
    checked before the work, not by the body size."""
    settings = ServerSettings(max_body_mb=40, max_image_pixels=4096 * 4096, max_input_tokens=2000)
    with LoopbackServer(create_app(engine, settings)) as live:
        yield live


def refused_quickly(server, body: dict) -> tuple[dict, float, float]:
    """(error, seconds, growth of this process's peak memory in MB) for a request that must be refused."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    elapsed = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak
    assert reply.status_code == 413, reply.text
    return reply.json()["error"], elapsed, grown


def test_a_huge_prompt_is_refused_before_it_is_tokenised(roomy):
    error, elapsed, grown = refused_quickly(roomy, {"messages": [{"role": "user", "content": "温度 " * 3_000_000}]})  # ~18 MB of JSON
    assert "9,000,000 characters, more than 2000 tokens can hold" in error["message"] and error["code"] == "limit_exceeded"
    assert elapsed < 1.5 and grown < 200
    assert httpx.get(f"{roomy.url}/health").json()["queue_depth"] == 0


def test_many_large_images_are_refused_from_their_headers(roomy, engine):
    from smolsight.engine.prompts import image_tokens

    big = data_uri(Image.new("RGB", (4096, 4096), (90, 120, 160)))  # 16.7 MP each, small as a PNG
    content = [{"type": "image_url", "image_url": {"url": big}} for _ in range(8)] + [{"type": "text", "text": "Compare."}]
    error, elapsed, grown = refused_quickly(roomy, {"messages": [{"role": "user", "content": content}]})
    tokens = 8 * image_tokens(engine.processor, 4096, 4096)  # 8 x 17 tiles x 64 = 8704 on the 256M; never decoded
    assert tokens > 2000 and f"the 8 image(s) would take {tokens} tokens, over this server's input limit of 2000" in error["message"]
    assert elapsed < 1.5 and grown < 150  # decoding them would hold 8 x 50 MB of pixels


def test_a_video_with_oversized_frames_is_refused_before_decoding(tmp_path, engine):
    import av

    path = tmp_path / "wide.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = 1920, 1088, "yuv420p"
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((1088, 1920, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    uri = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    with LoopbackServer(create_app(engine, ServerSettings(max_image_pixels=1_000_000))) as live:
        body = {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": uri}}, {"type": "text", "text": "What moves?"}]}]}
        error, elapsed, _ = refused_quickly(live, body)
    assert "1920x1088 = 2,088,960 pixels per frame is over the limit of 1,000,000" in error["message"] and elapsed < 1.5


def test_predicted_image_tokens_match_the_processor(engine):
    """The prediction the limits use, against the processor's own expansion of the prompt."""
    from smolsight.engine.prompts import image_tokens

    image_id = engine.model.config.image_token_id
    for width, height in [(800, 600), (64, 64), (1920, 1080), (300, 2500), (512, 512), (513, 200)]:
        for split in (True, False):
            inputs = engine.process(engine.request(Image.new("RGB", (width, height)), "x", split=split))
            assert image_tokens(engine.processor, width, height, split) == int((inputs["input_ids"] == image_id).sum())
