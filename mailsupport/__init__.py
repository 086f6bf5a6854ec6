"""mailsupport: an email-driven support desk."""

__version__ = "0.1.0"
