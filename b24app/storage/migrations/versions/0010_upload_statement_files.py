"""admin upload of 1C statement files: uploads kept for the preview, accounts remember their last file import
(issue 16)

Revision ID: 0010_upload_statement_files
Revises: 0009_rest2_own_deal_echo
"""
from alembic import op
import sqlalchemy as sa
import b24app.storage.db


revision = '0010_upload_statement_files'
down_revision = '0009_rest2_own_deal_echo'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'statement_uploads',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('portal_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('file_name', sa.String(length=255), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['portal_id'], ['portals.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_statement_uploads_portal_id', 'statement_uploads', ['portal_id'])
    op.create_index('ix_statement_uploads_expires_at', 'statement_uploads', ['expires_at'])
    with op.batch_alter_table('bank_accounts') as batch:
        batch.add_column(sa.Column('file_imported_at', b24app.storage.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('bank_accounts') as batch:
        batch.drop_column('file_imported_at')
    op.drop_index('ix_statement_uploads_expires_at', 'statement_uploads')
    op.drop_index('ix_statement_uploads_portal_id', 'statement_uploads')
    op.drop_table('statement_uploads')
