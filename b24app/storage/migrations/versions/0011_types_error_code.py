"""bank accounts keep the code of their last sync error beside its text (issue 14: errors stored as codes)

Revision ID: 0011_types_error_code
Revises: 0010_upload_statement_files

Rows failed before this revision get the code their text was written from: sync.record_failure wrote
"<exception class>: <message>" (and exactly "needs_consent" for a link that is not active), so the class name
tells the code without reading the message's words. Anything else is a plain bank error until the next read.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011_types_error_code'
down_revision = '0010_upload_statement_files'
branch_labels = None
depends_on = None

_BY_CLASS = [
    ("rate_limited", ["RateLimited: %"]),
    ("needs_consent", ["LinkNeedsConsent: %", "InvalidGrant: %", "Unauthorized: %", "Forbidden: %"]),
    ("unavailable", ["BankUnavailable: %", "ConnectError: %", "TimeoutError: %", "ConnectionError: %", "OSError: %"]),
    ("malformed", ["MalformedOperation: %"]),
    ("internal", ["RuntimeError: %", "BitrixError: %"]),
]


def upgrade() -> None:
    with op.batch_alter_table('bank_accounts') as batch:
        batch.add_column(sa.Column('last_error_code', sa.String(length=32), nullable=True))
    accounts = sa.table('bank_accounts', sa.column('last_error', sa.Text()),
                        sa.column('last_error_code', sa.String(32)))
    op.execute(accounts.update().where(accounts.c.last_error == 'needs_consent').values(last_error_code='needs_consent'))
    for code, patterns in _BY_CLASS:
        op.execute(accounts.update().where(accounts.c.last_error_code.is_(None),
                                           sa.or_(*[accounts.c.last_error.like(p) for p in patterns]))
                   .values(last_error_code=code))
    op.execute(accounts.update().where(accounts.c.last_error_code.is_(None), accounts.c.last_error.is_not(None))
               .values(last_error_code='bank_error'))


def downgrade() -> None:
    with op.batch_alter_table('bank_accounts') as batch:
        batch.drop_column('last_error_code')
