"""Media loading: every format and source users have, and every way it can be wrong."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from helpers import picture
from PIL import Image

from smolsight.errors import LimitError, MediaError
from smolsight.engine.media import load_image, load_video


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_formats_load_as_rgb(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(encoded(picture(64, 48), fmt))
    image = load_image(str(path))
    assert image.mode == "RGB" and image.size == (64, 48)


def test_sources_agree():
    data = encoded(picture(40, 30), "PNG")
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    from_bytes = np.asarray(load_image(data))
    assert np.array_equal(from_bytes, np.asarray(load_image(uri)))
    assert np.array_equal(from_bytes, np.asarray(load_image(base64.b64encode(data).decode() * 1)))
    assert np.array_equal(from_bytes, np.asarray(load_image(picture(40, 30))))


def test_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    red, green, blue = load_image(buffer.getvalue()).getpixel((4, 4))
    assert red > 200 and blue < 50


def test_exif_orientation_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encoded(picture(60, 20), "JPEG", exif=exif)
    assert load_image(data).size == (20, 60)


def test_rgba_and_greyscale_become_rgb():
    assert load_image(Image.new("RGBA", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("L", (4, 4), 7)).mode == "RGB"


@pytest.mark.parametrize(
    "source, error, words",
    [
        ("/no/such/file.png", MediaError, "no such file"),
        (b"definitely not an image", MediaError, "not an image"),
        ("data:image/png;base64,@@@not-base64@@@", MediaError, "not valid base64"),
        ("data:image/png,rawtext", MediaError, "base64 data URIs"),
    ],
)
def test_bad_images_named(source, error, words):
    with pytest.raises(error, match=words):
        load_image(source)


def test_truncated_image(tmp_path):
    data = encoded(picture(200, 200), "PNG")
    with pytest.raises(MediaError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_pixel_limit():
    with pytest.raises(LimitError, match="over the limit"):
        load_image(encoded(picture(100, 100), "PNG"), max_pixels=5000)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(MediaError, match="directory"):
        load_image(str(tmp_path))


def write_video(path, frames: int = 12, fps: int = 4) -> str:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if str(path).endswith(".mp4") else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            array = np.zeros((64, 96, 3), np.uint8)
            array[:, i * 6 : i * 6 + 12] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov"])
def test_video_sampling_by_fps_and_cap(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}")
    video = load_video(path, target_fps=1.0, max_frames=64)
    assert len(video.frames) == 3 and video.total_frames == 12 and video.fps == pytest.approx(4)
    capped = load_video(path, target_fps=4.0, max_frames=5)
    assert len(capped.frames) == 5 and capped.indices[0] == 0 and capped.indices[-1] == 11


def test_bad_videos(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match="decode|no video"):
        load_video(str(junk))
    with pytest.raises(MediaError, match="no such file"):
        load_video(str(tmp_path / "missing.mp4"))


def test_http_url_on_loopback(tmp_path):
    import functools
    import http.server
    import threading

    picture(50, 40).save(tmp_path / "cam.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert load_image(f"{base}/cam.png").size == (50, 40)
        with pytest.raises(MediaError, match="answered HTTP 404"):
            load_image(f"{base}/missing.png")
    finally:
        server.shutdown()
