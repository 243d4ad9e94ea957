"""bank accounts remember being watched across an unlink (re-linking watches them again)

Revision ID: 0002_review_relink_watch
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_review_relink_watch'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bank_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('watch_on_relink', sa.Boolean(), nullable=False, server_default=sa.false()))
    # Accounts of links unlinked before this revision: those that were ever read were watched (the best guess
    # there is; an account unwatched by hand before the unlink is watched again, and can be unticked).
    op.execute("UPDATE bank_accounts SET watch_on_relink = TRUE WHERE watched = FALSE AND last_synced_at IS NOT NULL"
               " AND link_id IN (SELECT id FROM bank_links WHERE status = 'unlinked')")


def downgrade() -> None:
    with op.batch_alter_table('bank_accounts', schema=None) as batch_op:
        batch_op.drop_column('watch_on_relink')
