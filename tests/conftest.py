"""Fixtures for every test: a clean environment, a store on SQLite and (when configured)
PostgreSQL, the CLI pointed at it, and the servers of tests/support registered as plugins.

Layout: tests/unit/ needs no server, subprocess or network; tests/e2e/ starts servers, runs
`mailsupport` as a process or runs daemons; tests/support/ holds what both share.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from mailsupport.config import Settings, load_settings
from mailsupport.store.db import Store
from tests.support.cli import Run, cli, cli_env
from tests.support.schemas import migrated

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts are rewritten
    from tests.support.smtpserver import SmtpServer

# The server fixtures (imap_server, pymap_server, dovecot_server, dovecot_oauth, smtp_server,
# oauth_server), the daemons fixture, all defined beside the servers they start.
pytest_plugins = [
    "tests.support.imapservers",
    "tests.support.smtpserver",
    "tests.support.oauthserver",
    "tests.support.daemons",
]

PG_URL = os.environ.get("MAILSUPPORT_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MAILSUPPORT_* from the developer's shell, and no ./settings.env from the checkout."""
    for key in list(os.environ):
        if key.upper().startswith("MAILSUPPORT_"):  # pydantic-settings ignores case
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'mailsupport.db'}"
        return
    with postgresql_schema() as url:
        yield url


@contextmanager
def postgresql_schema() -> Iterator[str]:
    """The URL of a new, empty schema of the test database, dropped afterwards."""
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
    migrated(settings.db_url)  # what Store.open's migration makes, without running it again
    store = Store.open(settings.db_url)
    yield store
    store.engine.dispose()


@pytest.fixture
def env_for_cli(settings: Settings) -> dict[str, str]:
    """Environment that points the CLI at the test store."""
    return cli_env(settings)


@pytest.fixture
def run(env_for_cli: dict[str, str]) -> Run:
    """`mailsupport ARGS` in this process against the test store: run("list", env={...}),
    `env` adding to or overriding the store's environment; `input` is its stdin."""

    def invoke(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return cli({**env_for_cli, **(env or {})}, *args, input=input)

    return invoke


@pytest.fixture
def smtp_env(env_for_cli: dict[str, str], smtp_server: SmtpServer) -> dict[str, str]:
    """The CLI's environment with outgoing mail through the test SMTP server."""
    return {
        **env_for_cli,
        "MAILSUPPORT_SMTP_HOST": smtp_server.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp_server.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "5",
        "COLUMNS": "200",  # `outbox list` clips its lines to the terminal's width
    }


@pytest.fixture
def smtp_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    """The test settings with outgoing mail through the test SMTP server."""
    return settings.model_copy(
        update={"smtp_host": smtp_server.host, "smtp_port": smtp_server.port,
                "smtp_security": "none", "smtp_timeout": 5}
    )  # fmt: skip
