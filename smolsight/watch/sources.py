"""Frame sources: RTSP cameras, HTTP MJPEG streams and snapshot URLs, video files, folders of
images and local camera devices, each turned into `Frame`s sampled at the source's rate.

`open_source` checks what can be checked before watching starts (the URL's scheme and host
under the URL policy, that a file or folder or device exists) and fails with one line
otherwise. Live sources (cameras and streams) are read on their own clock and may drop and come
back: the watcher reconnects them with backoff. Files and folders are read once, on the clip's
own clock, every sampled frame (or at the clip's speed with `realtime`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from PIL import Image

from ..engine.fetch import UrlPolicy, check_url, fetch, open_stream
from ..engine.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, load_image
from ..errors import MediaError, SmolsightError
from .rules import SourceSpec

OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0
MAX_MJPEG_FRAME_BYTES = 16 * 1024 * 1024


class SourceError(SmolsightError):
    """A source that cannot be watched as written (not one that dropped for a while)."""


@dataclass(frozen=True)
class Frame:
    """One sampled picture: `t` is seconds on the source's clock (the clip's position for files
    and folders, time since watching began for live sources); `at` the wall clock when read."""

    image: Image.Image
    t: float
    at: float


def redact(url: str) -> str:
    """The URL without a password, for logs and pages (rtsp://user:secret@cam/ is common)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))


class Sampler:
    """Lets through at most `fps` frames per second of a clock."""

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self.next_t: float | None = None

    def take(self, t: float) -> bool:
        if self.next_t is not None and t < self.next_t:
            return False
        self.next_t = t + self.interval if self.next_t is None or t - self.next_t > self.interval else self.next_t + self.interval
        return True


class Source:
    """What a source kind provides: whether it is live, and its frames until it ends or drops."""

    live = True

    def __init__(self, spec: SourceSpec, policy: UrlPolicy, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.policy = policy
        self.clock = clock  # seconds since watching began, for live sources

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError


class AvSource(Source):
    """RTSP, video files and camera devices, decoded by PyAV (FFmpeg)."""

    def __init__(self, spec, policy, clock, live: bool, options: dict | None = None, container_format: str | None = None) -> None:
        super().__init__(spec, policy, clock)
        self.live = live
        self.options = options or {}
        self.container_format = container_format

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import av

        sampler = Sampler(self.spec.sample_fps)
        started = time.monotonic()
        try:
            container = av.open(self.spec.url, format=self.container_format, options=self.options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot open {redact(self.spec.url)}: {exc}") from None
        with container:
            try:
                for frame in container.decode(video=0):
                    if stop.is_set():
                        return
                    t = self.clock() if self.live else float(frame.time or 0.0)
                    if not sampler.take(t):
                        continue
                    if self.spec.realtime and not self.live:
                        stop.wait(max(0.0, started + t - time.monotonic()))
                    yield Frame(frame.to_image(), t, time.time())
            except (av.FFmpegError, OSError) as exc:
                raise MediaError(f"{redact(self.spec.url)}: {exc}") from None


class FolderSource(Source):
    """The images of a folder in name order, `1 / sample_fps` seconds apart on its clock."""

    live = False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for index, path in enumerate(folder_images(Path(self.spec.url))):
            if stop.is_set():
                return
            t = index / self.spec.sample_fps
            if self.spec.realtime:
                stop.wait(1 / self.spec.sample_fps)
            yield Frame(load_image(path), t, time.time())


def folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class SnapshotSource(Source):
    """A URL that answers one JPEG (or PNG) per request, polled at the sample rate."""

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        interval = 1.0 / self.spec.sample_fps
        while not stop.is_set():
            began = time.monotonic()
            yield Frame(load_image(fetch(self.spec.url, self.policy)), self.clock(), time.time())
            stop.wait(max(0.0, interval - (time.monotonic() - began)))


class HttpSource(Source):
    """An http(s) URL: an MJPEG stream (multipart/x-mixed-replace) or, with kind auto, a
    snapshot URL when it answers a single image."""

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        content_type, chunks = open_stream(self.spec.url, self.policy)
        if not content_type.lower().startswith("multipart/"):
            chunks.close()
            if self.spec.kind == "mjpeg" or not content_type.lower().startswith("image/"):
                raise MediaError(f"{redact(self.spec.url)}: answered {content_type or 'no content type'}, not an MJPEG stream or an image")
            yield from SnapshotSource(self.spec, self.policy, self.clock).frames(stop)
            return
        sampler = Sampler(self.spec.sample_fps)
        try:
            for jpeg in mjpeg_parts(chunks, boundary_of(content_type), self.spec.url):
                if stop.is_set():
                    return
                t = self.clock()
                if sampler.take(t):
                    yield Frame(load_image(jpeg), t, time.time())
        finally:
            chunks.close()


def boundary_of(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').lstrip("-").encode()
    raise MediaError(f"an MJPEG stream without a boundary in its content type ({content_type})")


def mjpeg_parts(chunks: Iterator[bytes], boundary: bytes, url: str) -> Iterator[bytes]:
    """The body of each part of a multipart stream, as soon as the next part begins."""
    marker = b"--" + boundary
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while (start := buffer.find(marker)) >= 0 and (end := buffer.find(marker, start + len(marker))) >= 0:
            _, separator, body = buffer[start + len(marker) : end].partition(b"\r\n\r\n")
            buffer = buffer[end:]
            if separator and body.strip(b"\r\n-"):
                yield body.rstrip(b"\r\n-")
        if len(buffer) > MAX_MJPEG_FRAME_BYTES:
            raise MediaError(f"{redact(url)}: no part boundary within {MAX_MJPEG_FRAME_BYTES} bytes; is it an MJPEG stream?")


def open_source(spec: SourceSpec, policy: UrlPolicy, clock: Callable[[], float]) -> Source:
    """The source `spec` names, after the checks that need no connection; a `SourceError`
    naming the source otherwise."""
    try:
        return make_source(spec, policy, clock)
    except SmolsightError as exc:
        raise SourceError(f"source {spec.name!r}: {exc}") from None


def make_source(spec: SourceSpec, policy: UrlPolicy, clock: Callable[[], float]) -> Source:
    url, kind = spec.url, spec.kind
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("rtsp", "rtsps") and kind in ("auto", "rtsp"):
        check_url(url, policy)
        options = {"rtsp_transport": "tcp", "fflags": "nobuffer", "analyzeduration": "500000", "probesize": "65536"}
        return AvSource(spec, policy, clock, live=True, options=options)
    if scheme in ("http", "https") and kind in ("auto", "mjpeg", "snapshot"):
        check_url(url, policy)
        return SnapshotSource(spec, policy, clock) if kind == "snapshot" else HttpSource(spec, policy, clock)
    if scheme:
        raise SourceError(f"{redact(url)}: a {scheme}:// URL cannot be watched as kind {kind} (rtsp, http(s) or a path)")
    path = Path(url).expanduser()
    if kind == "camera" or (kind == "auto" and url.startswith("/dev/video")):
        if not path.exists():
            raise SourceError(f"no camera device {url} on this machine")
        return AvSource(spec, policy, clock, live=True, container_format="v4l2")
    if path.is_dir() and kind in ("auto", "folder"):
        if not folder_images(path):
            raise SourceError(f"folder {url} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return FolderSource(spec, policy, clock)
    if path.is_file() and kind in ("auto", "file"):
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise SourceError(f"{url} is not a video file ({', '.join(sorted(VIDEO_SUFFIXES))}); for pictures, watch their folder")
        return AvSource(spec, policy, clock, live=False)
    if not path.exists():
        raise SourceError(f"{url}: no such file, folder or device, and not an rtsp:// or http(s):// URL")
    raise SourceError(f"{url} cannot be watched as kind {kind}")
