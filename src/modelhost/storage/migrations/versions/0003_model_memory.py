"""Models: pinned flag and the last measured memory figures (RSS, peak; GPU memory, peak).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MEASURED = ("memory_measured_mb", "memory_peak_mb", "gpu_memory_measured_mb", "gpu_memory_peak_mb")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()))
        for name in _MEASURED:
            batch.add_column(sa.Column(name, sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        for name in (*_MEASURED, "pinned"):
            batch.drop_column(name)
