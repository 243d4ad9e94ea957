"""Re-encrypt stored secrets with the newest key (after deploying `new,old` in B24APP_TOKEN_KEYS)."""
from __future__ import annotations

from sqlalchemy import select

from .models import BankLink, OAuthState, Portal

COLUMNS = {
    Portal: ("access_token_enc", "refresh_token_enc"),
    BankLink: ("access_token_enc", "refresh_token_enc", "webhook_secret_enc", "consent_id_enc"),
    OAuthState: ("data_enc",),
}


def rotate_all(ctx, batch: int = 500) -> int:
    """Rotate every encrypted column in batches; safe to run again (already-rotated values rotate to themselves)."""
    count = 0
    for model, cols in COLUMNS.items():
        last = None
        pk = model.__mapper__.primary_key[0]
        while True:
            with ctx.db.session() as s:
                q = select(model).order_by(pk).limit(batch)
                if last is not None:
                    q = q.where(pk > last)
                rows = list(s.scalars(q.with_for_update()))
                for row in rows:
                    for col in cols:
                        value = getattr(row, col)
                        if value:
                            setattr(row, col, ctx.cipher.rotate(value))
                            count += 1
                if rows:
                    last = getattr(rows[-1], pk.key)
            if len(rows) < batch:
                break
    return count
