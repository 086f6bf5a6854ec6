"""Tests that need no server, no subprocess and no network."""
