"""operations: source (tbank | 1c) and the cross-source content_key (1C statement files, issue #16)

Revision ID: 0004_onec_operation_source
Revises: 0003_bankmoney
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_onec_operation_source'
down_revision = '0003_bankmoney'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows stored before this revision keep content_key NULL: their payer account was never stored, so the key
    # cannot be rebuilt; a 1C file still finds them through the fingerprint when the purpose text is the same
    # (docs/banks/1c-files.md).
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), server_default='tbank', nullable=False))
        batch_op.add_column(sa.Column('content_key', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_operations_content_key', ['account_id', 'content_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_index('ix_operations_content_key')
        batch_op.drop_column('content_key')
        batch_op.drop_column('source')
