"""Where things are: the checkout under test and the test fixtures."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: mailsupport/, tests/, docs/
FIXTURES = ROOT / "tests" / "fixtures"
MAIL = FIXTURES / "mail"  # real-world-shaped messages (fixtures/make_fixtures.py)
