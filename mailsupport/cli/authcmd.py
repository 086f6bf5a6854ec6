"""`mailsupport auth login | status | logout`: OAuth2 sign-in (mailsupport/oauth/)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer

from mailsupport.cli.app import app, print_json, state, sub_app
from mailsupport.cli.render import local_time, terminal_text

if TYPE_CHECKING:
    from mailsupport.oauth.account import OAuthAccount
    from mailsupport.oauth.grants import DeviceCode

OPERATOR = "Operator"

auth_app = sub_app(
    """Sign the support mailbox in with OAuth2 (Microsoft 365, Google, any OAuth2 server).

    Used when MAILSUPPORT_IMAP_AUTH or MAILSUPPORT_SMTP_AUTH is oauth2.

    Examples:
        mailsupport auth login
        mailsupport auth status
    """
)
app.add_typer(auth_app, name="auth", rich_help_panel=OPERATOR)


@auth_app.command("login")
def auth_login(ctx: typer.Context) -> None:
    """Sign in: a person approves a code in a browser, or the application proves itself.

    With the device-code flow it prints a web address and a code: open the
    address on any device, enter the code and sign in as the mailbox (or a
    person with access to it); the command waits until that is done. The
    client-credentials and service-account flows need no person: the
    command fetches a token once to prove the settings. Either way the
    sign-in is stored in the database and shared by poll, daemon and reply.

    Exit status: 0 signed in, 2 refused or the code expired (run it again),
    75 the OAuth2 server could not be reached.

    Examples:
        mailsupport auth login
    """
    from mailsupport.oauth.signin import login

    st = state(ctx)
    done = login(st.settings, st.store(), _show_code)
    for sign_in, grant in done:
        services = " and ".join(s.upper() for s in sign_in.services)
        typer.echo(
            f"signed in {sign_in.account.login} for {services} "
            f"({sign_in.account.provider} {sign_in.account.flow}); "
            f"token valid until {local_time(grant.expires_at)}"
        )


def _show_code(account: OAuthAccount, device: DeviceCode) -> None:
    where = terminal_text(device.verification_uri, one_line=True)
    code = terminal_text(device.user_code, one_line=True)
    left = device.expires_at - datetime.now(device.expires_at.tzinfo)
    minutes = max(1, round(left.total_seconds() / 60))
    typer.echo(f"To sign in {account.login}, open {where} and enter the code {code}")
    if device.verification_uri_complete:
        typer.echo(f"(or open {terminal_text(device.verification_uri_complete, one_line=True)})")
    typer.echo(f"Waiting up to {minutes} minutes for the sign-in; Ctrl-C stops.")
    # Whoever reads our output (a person, a script) needs the code before we wait.
    typer.get_text_stream("stdout").flush()


@auth_app.command("status")
def auth_status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show each OAuth2 sign-in: its state, when its token expires, when it was used.

    States: signed-in, expired (renewed at the next sign-in), revoked (run
    `auth login`), not-signed-in (device code: run `auth login`),
    not-used-yet (client credentials and service accounts sign in by
    themselves on first use). Tokens are never shown.

    --json gives a list of objects: login, services, provider, flow, state,
    expires_at, refreshed_at, signed_in_at, last_error, last_error_at.

    Exit status: 0 shown, 2 the OAuth2 settings are wrong.

    Examples:
        mailsupport auth status
        mailsupport auth status --json
    """
    from mailsupport.oauth.signin import describe

    st = state(ctx)
    described = describe(st.settings, st.store())
    if as_json:
        print_json(described)
        return
    if not described:
        typer.echo("nothing signs in with OAuth2 (IMAP_AUTH and SMTP_AUTH are password)")
        return
    for entry in described:
        services = " and ".join(s.upper() for s in entry["services"])
        typer.echo(
            f"{entry['login']} ({services}, {entry['provider']} {entry['flow']}): {entry['state']}"
        )
        for label, key in (
            ("token valid until", "expires_at"),
            ("token renewed", "refreshed_at"),
            ("last signed in to the mail server", "signed_in_at"),
        ):
            if entry[key]:
                typer.echo(f"  {label} {local_time(datetime.fromisoformat(entry[key]))}")
        if entry["last_error"]:
            when = local_time(datetime.fromisoformat(entry["last_error_at"]))
            typer.echo(f"  last error {when}: {terminal_text(entry['last_error'], one_line=True)}")


@auth_app.command("logout")
def auth_logout(
    ctx: typer.Context,
    every: bool = typer.Option(
        False, "--all", help="Forget every stored sign-in, not only the configured ones."
    ),
) -> None:
    """Forget the stored sign-in: the next one needs `auth login` (device code).

    The grant itself stays valid at the provider until it expires or an
    administrator revokes it there.

    Examples:
        mailsupport auth logout
    """
    from mailsupport.oauth.signin import logout

    st = state(ctx)
    count = logout(st.settings, st.store(), everything=every)
    typer.echo(f"forgot {count} stored sign-in(s)")
