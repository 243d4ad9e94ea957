"""operations keep T-Bank's category (payments the rules exclude are never matched)

Revision ID: 0007_money_category
Revises: 0006_tochka_link_consent
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_money_category'
down_revision = '0006_tochka_link_consent'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('category', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_column('category')
