"""The Bitrix24 sandbox: portals and the central OAuth server (`app`), REST plumbing and batch (`rest`),
CRM and other methods (`crm`, `methods`, `payments`), events (`events`), the install sequence (`install`),
pages a person sees (`pages`), PHP-style queries (`phpquery`), in-memory state (`state`).

Imports only the sandbox, the standard library and Flask; never the app.
"""
