"""One sandbox (portal or bank) in its own process, so the scale benchmark's workers do not share its GIL.

    python -m benchmarks.sandbox_process portal --client-id ID --client-secret SECRET
    python -m benchmarks.sandbox_process bank --client-id ID --client-secret SECRET

Listens on 127.0.0.1 (a free port), prints one JSON line `{"url": ...}` and serves until its standard
input closes or it receives SIGTERM/SIGINT, so it never outlives the benchmark that started it.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

# The app's install page is not running in the scale benchmark: installs still issue tokens, and the
# sandbox records the failed POST to this closed port (the discard port) in the install result.
NO_INSTALL_PAGE = "http://127.0.0.1:9/install"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("portal", "bank"))
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:9/bank/callback")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from b24app.sandbox.server import serve_in_thread

    if args.kind == "portal":
        from b24app.sandbox.portal.app import create_portal_sandbox

        app = create_portal_sandbox(portals=(), event_delivery="async", apps=[{
            "client_id": args.client_id, "client_secret": args.client_secret, "install_url": NO_INSTALL_PAGE,
            "handler_url": "http://127.0.0.1:9/app", "scope": "crm,placement,im,task,user_brief,sale"}])
    else:
        from b24app.sandbox.tbank.app import create_bank_sandbox

        app = create_bank_sandbox(redirect_uris=[args.redirect_uri])
    server = serve_in_thread(app)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"url": server.url}), flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
