"""Tokens at rest: MultiFernet with key rotation, the owner bound inside the ciphertext."""
from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class TokenCipherError(Exception):
    """A stored secret cannot be read with the configured keys, or belongs to another owner."""


class TokenCipher:
    """Encrypts small secrets; keys newest first so `rotate` re-encrypts with the first one."""

    def __init__(self, keys: tuple[str, ...] | list[str]):
        if not keys:
            raise ValueError("at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])

    def encrypt(self, owner: str, secret: str) -> str:
        """Encrypt `secret` bound to `owner`, so a ciphertext copied to another row does not decrypt there."""
        payload = json.dumps({"o": owner, "s": secret}, separators=(",", ":")).encode()
        return self._fernet.encrypt(payload).decode()

    def decrypt(self, owner: str, token: str) -> str:
        try:
            payload = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError) as exc:
            raise TokenCipherError("stored secret cannot be decrypted with the configured keys") from exc
        if payload.get("o") != owner:
            raise TokenCipherError("stored secret belongs to another owner")
        return payload["s"]

    def rotate(self, token: str) -> str:
        """Re-encrypt with the newest key (the owner binding is kept)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise TokenCipherError("stored secret cannot be decrypted with the configured keys") from exc
