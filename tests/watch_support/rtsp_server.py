"""A real RTSP server for the watch tests: GStreamer's RTSP server serving a folder of JPEG
frames (or a live test pattern) as H.264 on 127.0.0.1.

Run by Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0), not the test's
interpreter: `python3 rtsp_server.py PORT FRAMES_DIR FPS` (FRAMES_DIR "pattern" for a test
pattern). Prints "ready" once listening; stops on SIGTERM. Each client gets the clip from its
first frame, played at FPS in real time.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODE = "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 ! rtph264pay name=pay0 pt=96"


def launch_line(frames: str, fps: int) -> str:
    if frames == "pattern":
        return f"( videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate={fps}/1 ! {ENCODE} )"
    caps = f"image/jpeg,framerate={fps}/1"
    return f"( multifilesrc location={frames}/%04d.jpg index=0 caps=\"{caps}\" ! jpegdec ! identity sync=true ! {ENCODE} )"


def main() -> None:
    port, frames, fps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(frames, fps))
    factory.set_shared(False)
    server.get_mount_points().add_factory("/clip", factory)
    server.attach(None)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    GLib.timeout_add(100, lambda: True)  # lets Python see the signal while GLib waits
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
