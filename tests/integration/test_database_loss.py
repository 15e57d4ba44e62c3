"""PostgreSQL going away while the server runs: requests that need it answer 503 ``database_unavailable`` (not an
internal error) and work again once it is back. Real PostgreSQL: the test's own database is renamed away (its
connections cut) and renamed back."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from modelhost.api.app import create_app
from modelhost.config import Settings
from tests.support.cluster import POSTGRES_URL, fresh_postgres


def test_lost_postgres_is_a_503_then_recovers(tmp_path: Path) -> None:
    with fresh_postgres() as url:
        name = url.rsplit("/", 1)[1]
        admin = create_engine(
            POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        app = create_app(Settings(data_dir=tmp_path, database_url=url))
        try:
            with TestClient(app, base_url="http://localhost") as client:
                assert client.get("/v1/jobs").status_code == 200
                with admin.connect() as conn:
                    conn.execute(
                        text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                    )
                    conn.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"'))
                try:
                    lost = client.get("/v1/jobs")
                    assert lost.status_code == 503, lost.text
                    assert lost.json()["error"]["code"] == "database_unavailable"
                    assert lost.headers["retry-after"] == "5"
                finally:
                    with admin.connect() as conn:
                        conn.execute(text(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"'))
                assert client.get("/v1/jobs").status_code == 200
        finally:
            admin.dispose()
