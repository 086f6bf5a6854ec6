"""settings.example.env documents every setting, with a comment, and loads as it is."""

from __future__ import annotations

import re

from mailsupport.config import ENV_PREFIX, Settings, load_settings
from tests.support.paths import ROOT

EXAMPLE = ROOT / "settings.example.env"


def documented_keys() -> dict[str, str]:
    """Keys and values; each key must stand in a paragraph that has a comment."""
    keys: dict[str, str] = {}
    commented = False
    for line in EXAMPLE.read_text().splitlines():
        if not line.strip():
            commented = False
        commented = commented or line.startswith("#")
        match = re.match(r"(MAILSUPPORT_[A-Z_]+)=(.*)", line)
        if match:
            assert commented, f"{match.group(1)} has no comment above it"
            keys[match.group(1)] = match.group(2)
    return keys


def test_every_setting_is_documented() -> None:
    expected = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set(documented_keys()) == expected


def test_the_example_loads_and_equals_the_defaults() -> None:
    assert load_settings(str(EXAMPLE)) == Settings()
