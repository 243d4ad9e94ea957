"""The pipeline's refusals a person sees (the web layer maps `reason` to a message)."""
from __future__ import annotations


class ReconcileError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
