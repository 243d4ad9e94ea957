"""the client's credit by payer INN: surplus of overpayments, payments kept as credit, credit applied

Revision ID: 0008_money_credit
Revises: 0007_money_category
"""
from alembic import op
import sqlalchemy as sa
import b24app.storage.db


revision = '0008_money_credit'
down_revision = '0007_money_category'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('credits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('portal_id', sa.Integer(), nullable=False),
    sa.Column('inn', sa.String(length=12), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount', sa.Numeric(precision=18, scale=2), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('operation_pk', sa.Integer(), nullable=False),
    sa.Column('decision_id', sa.Integer(), nullable=True),
    sa.Column('invoice_b24_id', sa.BigInteger(), nullable=True),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operation_pk'], ['operations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['portal_id'], ['portals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('credits', schema=None) as batch_op:
        batch_op.create_index('ix_credits_inn', ['portal_id', 'inn', 'currency'], unique=False)
        batch_op.create_index(batch_op.f('ix_credits_portal_id'), ['portal_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('credits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credits_portal_id'))
        batch_op.drop_index('ix_credits_inn')
    op.drop_table('credits')
