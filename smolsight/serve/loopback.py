"""An ASGI app served on a free 127.0.0.1 port in a daemon thread, for as long as a `with` block
lasts: what `smolsight bench-serve` measures over real HTTP, and what the tests run their servers,
webhooks and cameras on."""

from __future__ import annotations

import threading
import time


class LoopbackServer:
    """`with LoopbackServer(app) as server:` … `server.url`; the thread stops when the block ends."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="loopback-server", daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
