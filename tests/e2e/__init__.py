"""Tests that start mail servers, run `mailsupport` as a process, or run daemons."""
