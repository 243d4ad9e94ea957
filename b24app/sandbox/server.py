"""Serve a WSGI app on a loopback port in a background thread (tests, demo, benchmarks)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """No access log: URLs may carry tokens (Bitrix24 puts `auth` in query strings)."""

    def log_request(self, *args, **kwargs) -> None:
        pass


@dataclass
class RunningServer:
    """A WSGI server running in a daemon thread; `url` has no trailing slash."""

    server: BaseWSGIServer
    thread: threading.Thread
    host: str
    port: int
    app: object = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start `app` on host:port (0 picks a free port) and return once it accepts connections."""
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    return RunningServer(server=server, thread=thread, host=host, port=server.server_port, app=app)
