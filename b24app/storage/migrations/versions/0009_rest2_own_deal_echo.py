"""deals remember our own last stage update, so its ONCRMDEALUPDATE echo costs no re-read (issue 17)

Revision ID: 0009_rest2_own_deal_echo
Revises: 0008_money_credit
"""
from alembic import op
import sqlalchemy as sa
import b24app.storage.db


revision = '0009_rest2_own_deal_echo'
down_revision = '0008_money_credit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'own_deal_updates',
        sa.Column('portal_id', sa.Integer(), nullable=False),
        sa.Column('deal_id', sa.BigInteger(), nullable=False),
        sa.Column('update_time', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('update_by', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['portal_id'], ['portals.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('portal_id', 'deal_id'),
    )


def downgrade() -> None:
    op.drop_table('own_deal_updates')
