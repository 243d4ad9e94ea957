"""Serve a WSGI app on a loopback port in a background thread (tests, demo, benchmarks)."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """No access log (URLs may carry tokens: Bitrix24 puts `auth` in query strings) and no Server banner."""

    def log_request(self, *args, **kwargs) -> None:
        pass

    def send_response(self, code, message=None) -> None:
        # http.server's send_response minus the `Server: Werkzeug/x Python/y` header: no version banner.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())


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


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket already bound and listening (port 0: a free one), to hand to `serve_in_thread` later.

    Servers that must know each other's addresses before they start hold their ports this way: a port
    only looked up as free may be taken (by any outgoing connection's local port) before it is bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> RunningServer:
    """Start `app` on host:port (0 picks a free port), or on `sock` from `listening_socket`, and return once
    it accepts connections."""
    if sock is not None:
        host, port = sock.getsockname()[:2]
        server = make_server(host, port, app, threaded=True, request_handler=QuietHandler, fd=sock.fileno())
        sock.close()  # the server holds its own duplicate of the descriptor
    else:
        server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
        port = server.server_port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"wsgi-{port}",
                              daemon=True)
    thread.start()
    return RunningServer(server=server, thread=thread, host=host, port=port, app=app)
