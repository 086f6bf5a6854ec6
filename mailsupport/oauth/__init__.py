"""OAuth2 sign-in to the IMAP and SMTP servers.

- account.py: which account signs in how, decided from the settings (pure).
- grants.py: the token endpoint's conversations, through Authlib and google-auth.
- tokens.py: one valid access token per account, shared by every process through the
  database, refreshed shortly before it expires by one process at a time.
- sasl.py: signing in to IMAP and SMTP with a token (XOAUTH2, OAUTHBEARER).
"""
