"""Shared fixtures: a clean environment, and a store on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailsupport.config import Settings, load_settings
from mailsupport.store.db import Store

PG_URL = os.environ.get("MAILSUPPORT_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MAILSUPPORT_* from the developer's shell, and no ./settings.env from the checkout."""
    for key in list(os.environ):
        if key.startswith("MAILSUPPORT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'mailsupport.db'}"
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        support_address="support@example.com",
        support_name="Example Support",
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings.db_url)
    yield store
    store.engine.dispose()


@pytest.fixture
def env_for_cli(settings: Settings) -> dict[str, str]:
    """Environment that points the CLI at the test store."""
    return cli_env(settings)


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment that points the CLI at the store and desk of `settings`."""
    return {
        "MAILSUPPORT_DATA_DIR": str(settings.data_dir),
        "MAILSUPPORT_DATABASE_URL": settings.db_url,
        "MAILSUPPORT_SUPPORT_ADDRESS": settings.support_address,
        "MAILSUPPORT_SUPPORT_NAME": settings.support_name,
    }
