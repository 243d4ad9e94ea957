"""Sandboxes: real HTTP servers that stand in for Bitrix24 and T-Bank on this machine.

`portal` implements the documented subset of a Bitrix24 cloud portal (with its central OAuth server),
`bank` implements T-ID and the T-Bank Business API. Both run in-process with `serve_in_thread` or
as processes from `b24app demo`; the app's real client code talks to them over sockets.
"""
