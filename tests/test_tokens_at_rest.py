"""The database never holds a token in clear text, and keys can be rotated."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from b24app.storage.crypto import TokenCipher, TokenCipherError
from b24app.storage.keyrotation import rotate_all
from b24app.storage.models import BankLink, Portal
from conftest import PG_URL


def issued_secrets(stack) -> set[str]:
    portal = {t["token"] for t in stack.portal_state()["issued_tokens"]}
    bank = {t.get("token") or t.get("value") for t in stack.bank_state()["issued_tokens"]}
    apps = {a["application_token"] for a in stack.portal_state()["installed_apps"]}
    return {s for s in portal | bank | apps if s}


@pytest.mark.skipif(bool(PG_URL), reason="reads the SQLite file itself")
def test_database_file_holds_no_token_in_clear_text(linked):
    linked.ctx.bitrix(linked.member_id()).call("user.current")
    secrets = issued_secrets(linked)
    assert len(secrets) >= 4
    linked.ctx.db.dispose()  # flush WAL into the main file
    from pathlib import Path
    db_file = Path(linked.settings.database_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
    assert raw, "database file not found"
    leaked = [s for s in secrets if s.encode() in raw]
    assert leaked == []


def test_ciphertext_is_bound_to_its_owner():
    cipher = TokenCipher((Fernet.generate_key().decode(),))
    token = cipher.encrypt("member-a", "secret-value")
    assert cipher.decrypt("member-a", token) == "secret-value"
    with pytest.raises(TokenCipherError):
        cipher.decrypt("member-b", token)  # copied into another portal's row


def test_rotate_keys_reencrypts_everything_so_the_old_key_can_go(linked):
    old = linked.settings.token_keys[0]
    new = Fernet.generate_key().decode()
    from b24app.context import AppContext
    rotated_ctx = AppContext(linked.settings.with_overrides(token_keys=(new, old)), db=linked.ctx.db)
    count = rotate_all(rotated_ctx)
    assert count >= 4
    only_new = AppContext(linked.settings.with_overrides(token_keys=(new,)), db=linked.ctx.db)
    creds = only_new.portals.load(linked.member_id())
    assert creds.access_token and creds.refresh_token
    with linked.ctx.db.session() as s:
        link = s.scalar(select(BankLink))
        portal = s.scalar(select(Portal))
    assert only_new.cipher.decrypt(f"bank:{link.portal_id}:{link.inn}:{link.kpp}", link.refresh_token_enc)
    with pytest.raises(TokenCipherError):
        TokenCipher((old,)).decrypt(portal.member_id, portal.refresh_token_enc)
