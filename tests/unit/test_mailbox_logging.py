"""The daemon's log with a mailboxes file: each mailbox's passwords blanked out, and the
lines logged in a mailbox's thread naming it."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailsupport.config import Settings
from mailsupport.daemon import setup_logging
from mailsupport.errors import ConfigError, PermanentError, TemporaryError
from mailsupport.logs import in_mailbox
from mailsupport.mailboxes import load_mailboxes
from mailsupport.poll import polled_mailboxes, worst_exit_code

SECRET = "billing-imap-password-4711"


@pytest.fixture
def kept_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def desk(settings: Settings, tmp_path: Path) -> Settings:
    file = tmp_path / "mailboxes.toml"
    file.write_text(
        '[[mailbox]]\nname = "sales"\naddress = "sales@example.com"\n'
        'imap_host = "imap.example.com"\nimap_user = "sales"\n\n'
        '[[mailbox]]\nname = "billing"\naddress = "billing@example.com"\n'
        f'imap_host = "imap.example.com"\nimap_user = "billing"\nimap_password = "{SECRET}"\n\n'
        '[[mailbox]]\nname = "billing-too"\naddress = "billing2@example.com"\n'
        'imap_host = "imap.example.com"\nimap_user = "billing"\n\n'
        '[[mailbox]]\nname = "web"\naddress = "web@example.com"\nimap_host = ""\n'
    )
    return settings.model_copy(update={"mailboxes_file": str(file)})


def test_each_mailbox_is_named_and_its_password_blanked_out(
    settings: Settings, tmp_path: Path, kept_logging: None
) -> None:
    configured = desk(settings, tmp_path)
    setup_logging(configured, load_mailboxes(configured))
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = logging.getLogger("mailsupport.test")

    def in_thread() -> None:
        with in_mailbox("billing"):
            log.warning("login as billing with %s refused", SECRET)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    log.info("the main thread names no mailbox")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("WARNING mailbox billing: login as billing with ******** refused")
    assert lines[1].endswith("INFO the main thread names no mailbox")
    assert SECRET not in stream.getvalue()


def test_one_folder_is_polled_once_and_mailboxes_without_a_server_not_at_all(
    settings: Settings, tmp_path: Path
) -> None:
    boxes, same = polled_mailboxes(load_mailboxes(desk(settings, tmp_path)))
    assert [box.name for box in boxes] == ["sales", "billing"]
    assert same == {"billing-too": "billing"}
    [alone], none = polled_mailboxes(load_mailboxes(settings))  # no file: the one mailbox
    assert alone.name == "default" and not alone.polled and none == {}


def test_the_exit_code_of_several_failures() -> None:
    config, temporary, other = ConfigError("a"), TemporaryError("b"), PermanentError("c")
    assert worst_exit_code([]) == 0
    assert worst_exit_code([other, temporary]) == 75
    assert worst_exit_code([temporary, config, other]) == 2
    assert worst_exit_code([other]) == 1
