"""Tochka as a second live bank: the consent id and customer code on the link, the bank's own account id,
and the receipts of accepted webhooks (a replayed webhook is refused) (issue #16)

Revision ID: 0006_tochka_link_consent
Revises: 0005_rest_own_echo
"""
from alembic import op
import sqlalchemy as sa
import b24app.storage.db


revision = '0006_tochka_link_consent'
down_revision = '0005_rest_own_echo'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bank_links', schema=None) as batch_op:
        # One company may have accounts at both banks: a link is unique per portal, bank and company.
        batch_op.add_column(sa.Column('provider', sa.String(length=16), server_default='tbank', nullable=False))
        batch_op.drop_constraint('uq_bank_link_company', type_='unique')
        batch_op.create_unique_constraint('uq_bank_link_company', ['portal_id', 'provider', 'inn', 'kpp'])
        batch_op.add_column(sa.Column('consent_id_enc', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('customer_code', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_bank_links_customer_code', ['customer_code'], unique=False)
    with op.batch_alter_table('bank_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('external_id', sa.String(length=64), nullable=True))
    op.create_table(
        'tochka_webhook_receipts',
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('received_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('digest'),
    )
    op.create_index('ix_tochka_webhook_receipts_received_at', 'tochka_webhook_receipts', ['received_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_tochka_webhook_receipts_received_at', table_name='tochka_webhook_receipts')
    op.drop_table('tochka_webhook_receipts')
    with op.batch_alter_table('bank_accounts', schema=None) as batch_op:
        batch_op.drop_column('external_id')
    with op.batch_alter_table('bank_links', schema=None) as batch_op:
        batch_op.drop_index('ix_bank_links_customer_code')
        batch_op.drop_column('customer_code')
        batch_op.drop_column('consent_id_enc')
        batch_op.drop_constraint('uq_bank_link_company', type_='unique')
        batch_op.create_unique_constraint('uq_bank_link_company', ['portal_id', 'inn', 'kpp'])
        batch_op.drop_column('provider')
