"""Signing in to IMAP and SMTP with an access token.

XOAUTH2 (Google's and Microsoft's) where the server offers it, else OAUTHBEARER (RFC 7628).
A token the server refuses is renewed once and tried again: it may have been revoked before
it expired, or our clock may disagree with the server's.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailsupport.oauth.tokens import TokenKeeper

if TYPE_CHECKING:
    import aiosmtplib


def imap_login(client: IMAPClient, keeper: TokenKeeper, token: str) -> None:
    """Sign in with `token` (had before connecting: no connection is made for a sign-in
    that is revoked). Raises LoginError when the server refuses a renewed token too."""
    offered = {bytes(c).upper() for c in client.capabilities()}
    bearer = b"AUTH=OAUTHBEARER" in offered and b"AUTH=XOAUTH2" not in offered
    login = keeper.account.login
    try:
        _imap_authenticate(client, login, token, bearer)
    except LoginError:
        _imap_authenticate(client, login, keeper.access_token(refused=token), bearer)
    keeper.signed_in()


def _imap_authenticate(client: IMAPClient, login: str, token: str, bearer: bool) -> None:
    if bearer:
        client.oauthbearer_login(login, token)
    else:
        client.oauth2_login(login, token)


async def smtp_login(client: aiosmtplib.SMTP, keeper: TokenKeeper) -> None:
    """After EHLO (and STARTTLS). Raises SMTPAuthenticationError when the server refuses a
    renewed token too, SMTPException when it offers neither mechanism."""
    import asyncio

    import aiosmtplib

    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    offered = client.server_auth_methods
    if "xoauth2" not in offered and "oauthbearer" not in offered:
        raise aiosmtplib.SMTPException(
            "AUTH extension is not supported by the server with XOAUTH2 or OAUTHBEARER"
        )
    login = keeper.account.login
    token = await asyncio.to_thread(keeper.access_token)
    try:
        await _smtp_authenticate(client, login, token, offered)
    except aiosmtplib.SMTPAuthenticationError:
        token = await asyncio.to_thread(keeper.access_token, token)
        await _smtp_authenticate(client, login, token, offered)
    await asyncio.to_thread(keeper.signed_in)


async def _smtp_authenticate(
    client: aiosmtplib.SMTP, login: str, token: str, offered: list[str]
) -> None:
    import aiosmtplib

    if "xoauth2" in offered:
        await client.auth_xoauth2(login, token)
        return
    # RFC 7628 3.1: gs2 header naming the user, then auth=Bearer, each ended by ^A.
    name = login.replace("=", "=3D").replace(",", "=2C")
    blob = f"n,a={name},\x01auth=Bearer {token}\x01\x01".encode()
    response = await client.execute_command(b"AUTH", b"OAUTHBEARER", base64.b64encode(blob))
    if response.code == 334:  # the error challenge: RFC 7628 3.2.3 answers it with ^A
        response = await client.execute_command(b"\x01")
    if response.code != 235:
        raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
