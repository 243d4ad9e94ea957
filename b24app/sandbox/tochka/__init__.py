"""The Tochka sandbox: consent pages with the SMS step, the token endpoint, the Open API, signed webhooks with
retries and faults (`app`), and its state (`state`).

Imports only the sandbox, the standard library and Flask/cryptography; never the app.
"""
