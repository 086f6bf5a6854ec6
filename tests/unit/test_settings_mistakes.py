"""Settings mistakes stop with one line on stderr and exit 2 (issue 13): a misspelt key, a
database URL that cannot work (its password never shown), and no Alembic chatter with -v."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.config import (
    CONFIG_VARIABLE,
    ENV_PREFIX,
    RESERVED_ENV_PREFIX,
    Settings,
    load_settings,
)
from mailsupport.errors import ConfigError
from mailsupport.logs import secrets_of
from mailsupport.store import SCHEMA_REVISION
from mailsupport.store.db import create_db_engine
from tests.support.paths import ROOT
from tests.support.processes import mailsupport_process

PASSWORD = "hunter2secret"


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one in-process command."""
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MAILSUPPORT_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture(autouse=True)
def alembic_level_restored() -> Iterator[None]:
    """The CLI sets the alembic logger's level for the process; give it back."""
    logger = logging.getLogger("alembic")
    before = logger.level
    yield
    logger.setLevel(before)


# -- unknown keys ----------------------------------------------------------------------------


def test_a_misspelt_key_in_the_environment(env: dict[str, str]) -> None:
    code, out, err = run_cli({**env, "MAILSUPPORT_SMTP_HOTS": "mail.example.com"}, "list")
    assert code == 2
    assert out == ""
    assert err == (
        "mailsupport: unknown setting MAILSUPPORT_SMTP_HOTS in the environment "
        "(did you mean MAILSUPPORT_SMTP_HOST?)\n"
    )


def test_a_misspelt_key_in_the_settings_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "desk.env"
    path.write_text("MAILSUPPORT_SUPPORT_NAME=Help\nMAILSUPPORT_IMAP_PASS=x\n")
    code, _, err = run_cli(env, "--config", str(path), "list")
    assert code == 2
    assert err == (
        f"mailsupport: unknown setting MAILSUPPORT_IMAP_PASS in {path} "
        "(did you mean MAILSUPPORT_IMAP_PASSWORD?)\n"
    )


def test_the_default_settings_file_is_named_as_such(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "settings.env").write_text("MAILSUPPORT_LOGLEVEL=INFO\n")  # the working dir
    code, _, err = run_cli(env, "list")
    assert code == 2
    assert err == (
        "mailsupport: unknown setting MAILSUPPORT_LOGLEVEL in settings.env "
        "(did you mean MAILSUPPORT_LOG_LEVEL?)\n"
    )


def test_keys_are_case_insensitive_and_named_as_written(tmp_path: Path) -> None:
    path = tmp_path / "desk.env"
    path.write_text("mailsupport_support_name=Help\n")
    assert load_settings(str(path)).support_name == "Help"
    path.write_text("mailsupport_support_nmae=Help\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == (
        f"unknown setting mailsupport_support_nmae in {path} "
        "(did you mean MAILSUPPORT_SUPPORT_NAME?)"
    )


def test_no_close_match_points_at_the_example(env: dict[str, str]) -> None:
    code, _, err = run_cli({**env, "MAILSUPPORT_COLOUR": "always"}, "list")
    assert code == 2
    assert err == (
        "mailsupport: unknown setting MAILSUPPORT_COLOUR in the environment "
        "(no setting has a similar name; settings.example.env lists them all)\n"
    )


def test_load_settings_names_the_unknown_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSUPPORT_DB_URL", "sqlite:///x.db")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "unknown setting MAILSUPPORT_DB_URL in the environment "
        "(did you mean MAILSUPPORT_DATABASE_URL?)"
    )


def test_reserved_and_unrelated_variables_are_left_alone(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a.env").write_text("MAILSUPPORT_SUPPORT_NAME=Help\n")
    others = {
        # .ci/run exports it for the whole test run; a developer's shell may keep it.
        "MAILSUPPORT_TEST_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        CONFIG_VARIABLE: str(tmp_path / "a.env"),
        "_MAILSUPPORT_COMPLETE": "",  # click's shell completion (empty: not completing)
        "BENCH_MAILSUPPORT_IMAP_HOST": "x",  # bench/intake.py's own
        "SMTP_HOTS": "x",  # no prefix: not ours
    }
    code, out, err = run_cli({**env, **others}, "list")
    assert (code, out, err) == (0, "no tickets\n", "")


def test_reserved_names_are_not_settings_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "desk.env"
    path.write_text("MAILSUPPORT_TEST_DATABASE_URL=sqlite:///x.db\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == (
        f"unknown setting MAILSUPPORT_TEST_DATABASE_URL in {path} "
        "(did you mean MAILSUPPORT_DATABASE_URL?)"
    )


def test_no_setting_takes_a_reserved_name() -> None:
    names = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert CONFIG_VARIABLE not in names
    assert not [name for name in names if name.startswith(RESERVED_ENV_PREFIX)]


def test_every_name_the_project_uses_is_known() -> None:
    """A MAILSUPPORT_* variable the code, CI, bench or docs read or set must be a setting,
    MAILSUPPORT_CONFIG or reserved: anything else would make every command fail."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {CONFIG_VARIABLE}
    places = [ROOT / "README.md", ROOT / "settings.example.env", *(ROOT / ".ci").iterdir()]
    for folder in ("mailsupport", "bench", "contrib", "docs"):
        places += [p for p in (ROOT / folder).rglob("*") if p.is_file()]
    # The tests' helpers and fixtures; the tests themselves spell mistakes on purpose.
    places += [ROOT / "tests" / "conftest.py", *(ROOT / "tests" / "support").glob("*.py")]
    found = set()
    for place in places:
        if place.suffix in {".py", ".md", ".env", ".service", ""}:
            text = place.read_text(errors="replace")
            found |= set(re.findall(r"(?<![A-Za-z0-9_])MAILSUPPORT_[A-Z0-9_]*", text))
            # The README shows what a typo does: the mistake it names is meant.
            found -= set(re.findall(r"unknown setting (MAILSUPPORT_[A-Z0-9_]*)", text))
    # "MAILSUPPORT_IMAP_*" in prose names a group of settings, not one.
    unknown = {n for n in found - known if not n.endswith("_")}
    unknown = {n for n in unknown if not n.startswith(RESERVED_ENV_PREFIX)}
    assert not unknown
    assert "MAILSUPPORT_TEST_DATABASE_URL" in found  # the scan does see the reserved name


# -- the database URL ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "PostgreSQL"])
def test_postgresql_without_a_driver_means_psycopg(scheme: str) -> None:
    settings = load_settings(database_url=f"{scheme}://desk:pw@db.example.com:5432/desk")
    assert settings.db_url == "postgresql+psycopg://desk:pw@db.example.com:5432/desk"


def test_postgres_urls_work_through_the_cli(db_url: str, env: dict[str, str]) -> None:
    if not db_url.startswith("postgresql+psycopg://"):
        pytest.skip("needs PostgreSQL (MAILSUPPORT_TEST_DATABASE_URL)")
    for scheme in ("postgres://", "postgresql://"):
        url = db_url.replace("postgresql+psycopg://", scheme, 1)
        code, out, err = run_cli({**env, "MAILSUPPORT_DATABASE_URL": url}, "list")
        assert (code, out, err) == (0, "no tickets\n", "")


UNUSABLE = [
    (
        f"mysql://desk:{PASSWORD}@db.example.com/desk",
        "mysql is not supported: use PostgreSQL (postgresql://USER:PASSWORD@HOST/DBNAME) "
        "or SQLite (leave it empty)",
    ),
    (
        f"not a url {PASSWORD}",
        "not a database URL: write postgresql://USER:PASSWORD@HOST/DBNAME, "
        "or leave it empty for SQLite in MAILSUPPORT_DATA_DIR",
    ),
    (
        f"postgresql://desk:{PASSWORD}@db.example.com:54x2/desk",
        "the port must be a number, as in postgresql://USER:PASSWORD@HOST:5432/DB",
    ),
    (  # the password's tail would become the host, and the server would print it
        f"postgresql://desk:hunter@{PASSWORD}@db.example.com/desk",
        "an @ in the password must be written as %40 (and a % as %25)",
    ),
    (
        f"postgresql+psycopg://desk:{PASSWORD}@[::1/desk",
        "the port must be a number, as in postgresql://USER:PASSWORD@HOST:5432/DB",
    ),
]


@pytest.mark.parametrize(("url", "message"), UNUSABLE)
@pytest.mark.parametrize("command", [["list"], ["doctor"], ["db", "status"]])
def test_an_unusable_database_url_is_one_line_without_the_password(
    env: dict[str, str], url: str, message: str, command: list[str]
) -> None:
    code, out, err = run_cli({**env, "MAILSUPPORT_DATABASE_URL": url}, "-v", *command)
    assert code == 2
    assert out == ""
    assert err == f"mailsupport: invalid setting MAILSUPPORT_DATABASE_URL: {message}\n"
    assert "hunter" not in out + err


@pytest.mark.skipif(find_spec("psycopg2") is not None, reason="psycopg2 is installed here")
def test_a_driver_that_is_not_installed(env: dict[str, str]) -> None:
    url = f"postgresql+psycopg2://desk:{PASSWORD}@db.example.com/desk"
    code, _, err = run_cli({**env, "MAILSUPPORT_DATABASE_URL": url}, "list")
    assert code == 2
    assert err == (
        "mailsupport: invalid setting MAILSUPPORT_DATABASE_URL: the psycopg2 driver is not "
        "installed: write postgresql:// to use psycopg (version 3), which mailsupport installs\n"
    )


def test_load_settings_never_shows_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSUPPORT_DATABASE_URL", f"mssql://sa:{PASSWORD}@db/desk")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("invalid setting MAILSUPPORT_DATABASE_URL: mssql is not")
    assert PASSWORD not in str(caught.value) and "(got" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://desk:{PASSWORD}@db.example.com:54x2/desk",
        f"postgresql+psycopg://desk:x@{PASSWORD}:99@db.example.com/desk",  # tail as the port
        f"{PASSWORD} is no url",
        f"nosuchdb://desk:{PASSWORD}@db.example.com/desk",
    ],
)
def test_the_engine_never_shows_the_url_either(url: str) -> None:
    """Store.open takes any URL (tests, bench), not only one Settings checked."""
    with pytest.raises(ConfigError) as caught:
        create_db_engine(url)
    assert str(caught.value).startswith("invalid setting MAILSUPPORT_DATABASE_URL: ")
    assert "hunter" not in str(caught.value)


def test_logs_blank_the_whole_database_password() -> None:
    """urlsplit would see only "pa" of a password holding a / (SQLAlchemy takes it all)."""
    settings = load_settings(database_url="postgresql://desk:pa/ss%21word@db.example.com/desk")
    assert {"pa/ss%21word", "pa/ss!word"} <= set(secrets_of(settings))


# -- Alembic stays quiet -----------------------------------------------------------------------


@pytest.mark.slow
def test_verbose_on_a_fresh_database_shows_no_alembic_chatter(
    env_for_cli: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    code, out, _ = run_cli(env_for_cli, "-v", "list")
    assert (code, out) == (0, "no tickets\n")
    assert not [r for r in caplog.records if r.name.startswith("alembic")]
    ours = [r.getMessage() for r in caplog.records if r.name == "mailsupport.store.db"]
    assert ours == [f"created the database schema (revision {SCHEMA_REVISION})"]


def test_at_debug_alembic_may_speak(
    env_for_cli: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, _, _ = run_cli({**env_for_cli, "MAILSUPPORT_LOG_LEVEL": "DEBUG"}, "list")
    assert code == 0
    assert [r for r in caplog.records if r.name.startswith("alembic")]


def test_alembic_warnings_stay_visible(
    env_for_cli: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert run_cli(env_for_cli, "-v", "list")[0] == 0
    logging.getLogger("alembic.runtime.migration").warning("a warning")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == ["a warning"]


@pytest.mark.slow
def test_verbose_stderr_of_a_real_process(tmp_path: Path) -> None:
    """The whole of stderr as a user sees it: our one line, none of Alembic's."""
    # conftest.clean_env took every MAILSUPPORT_* setting away, and made tmp_path the cwd.
    done = mailsupport_process({"MAILSUPPORT_DATA_DIR": str(tmp_path / "data")}, "-v", "list")
    assert (done.returncode, done.stdout) == (0, b"no tickets\n")
    assert done.stderr.decode() == (
        f"INFO mailsupport.store.db: created the database schema (revision {SCHEMA_REVISION})\n"
    )
