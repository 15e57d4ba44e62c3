"""Model catalog and runtime settings.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("task", sa.String(50), nullable=False),
        sa.Column("backend", sa.String(200), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("python_env", sa.String(100), nullable=True),
        sa.Column("device", sa.String(50), nullable=False),
        sa.Column("threads", sa.Integer, nullable=True),
        sa.Column("idle_timeout_seconds", sa.Float, nullable=True),
        sa.Column("memory_estimate_mb", sa.Integer, nullable=True),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("builtin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_models_task", "models", ["task"])
    op.create_table(
        "runtime_settings",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runtime_settings")
    op.drop_index("ix_models_task", "models")
    op.drop_table("models")
