"""bank links remember how their INN was vetted; malformed statement items are quarantined

Revision ID: 0003_bankmoney
Revises: 0002_review_relink_watch
"""
from alembic import op
import sqlalchemy as sa
import b24app.storage.db


revision = '0003_bankmoney'
down_revision = '0002_review_relink_watch'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bank_links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inn_check', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('inn_confirmed_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=True))
    op.create_table('quarantined_operations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('portal_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('item_key', sa.String(length=64), nullable=False),
    sa.Column('operation_id', sa.String(length=128), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('first_seen_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('seen_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['bank_accounts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['portal_id'], ['portals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'item_key', name='uq_quarantined_item')
    )
    with op.batch_alter_table('quarantined_operations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quarantined_operations_portal_id'), ['portal_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('quarantined_operations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quarantined_operations_portal_id'))
    op.drop_table('quarantined_operations')
    with op.batch_alter_table('bank_links', schema=None) as batch_op:
        batch_op.drop_column('inn_confirmed_at')
        batch_op.drop_column('inn_check')
