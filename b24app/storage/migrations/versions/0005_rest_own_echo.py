"""invoices remember our own last update, refresh requests the event behind them (issue 17)

Revision ID: 0005_rest_own_echo
Revises: 0004_onec_operation_source
"""
from alembic import op
import sqlalchemy as sa
import b24app.storage.db


revision = '0005_rest_own_echo'
down_revision = '0004_onec_operation_source'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invoices') as batch:
        batch.add_column(sa.Column('own_update_time', b24app.storage.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('own_update_by', sa.Integer(), nullable=True))
    with op.batch_alter_table('invoice_refreshes') as batch:
        batch.add_column(sa.Column('event_ts', b24app.storage.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('event_user', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('invoice_refreshes') as batch:
        batch.drop_column('event_user')
        batch.drop_column('event_ts')
    with op.batch_alter_table('invoices') as batch:
        batch.drop_column('own_update_by')
        batch.drop_column('own_update_time')
