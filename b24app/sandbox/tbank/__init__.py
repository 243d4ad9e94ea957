"""The T-Bank sandbox: T-ID sign-in pages and back channel (`tid`), the Business API (`api`, `ops`), webhooks
(`webhooks`), the control API (`control`), state (`state`) and test helpers (`testing`), one Flask app (`app`).

Imports only the sandbox, the standard library and Flask; never the app.
"""
