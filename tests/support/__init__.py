"""What the tests share: real mail servers, mail to feed them, and helpers for the desk, the
CLI, daemons and processes (registered for every test by tests/conftest.py)."""
