"""Sandboxes: real HTTP servers that stand in for Bitrix24 and T-Bank on this machine.

`portal/` implements the documented subset of a Bitrix24 cloud portal (with its central OAuth server),
`tbank/` T-ID and the T-Bank Business API, `tochka/` Tochka's consent flow, Open API and webhooks. Both run in-process with `serve_in_thread` or
as processes from `b24app demo`; the app's real client code talks to them over sockets.

Imports only itself, the standard library and third-party libraries, never the app, so a sandbox answers as the
documented service would and not as the app expects. One exception: `stack.py`, the harness that starts the app
beside the sandboxes for the demo, the tests and the benchmarks (tests/test_import_rules.py lists it).
"""
