"""Clients of the systems outside: Bitrix24 REST (`bitrix/`) and the banks (`banks/`: T-Bank, Tochka, 1C files).

Stateless: no database, no Flask, no app settings. May import `b24app.domain`, `b24app.backoff`, each other,
the standard library and httpx/authlib/cryptography; never storage, pipeline, web or sandbox.
"""
