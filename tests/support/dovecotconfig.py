"""Dovecot's configuration for a test server (imapservers.DovecotServer), with the parts
added for OAuth2 logins, and the system users and groups it may run as."""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable


def user_exists(name: str) -> bool:
    return _known(pwd.getpwnam, name)


def group_exists(name: str) -> bool:
    return _known(grp.getgrnam, name)


def _known(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


# Only this file is read (-c), never /etc/dovecot. Every path lives in the temp dir.
DOVECOT_CONFIG = """\
protocols = imap
listen = {host}
instance_name = mailsupport-test-{port}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
auth_verbose = yes
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
first_valid_gid = 1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
{auth_extra}mail_location = maildir:~/Maildir
# IDLE: inotify normally wakes Dovecot at once; this is the fallback poll.
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
{oauth2_passdb}userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={home}
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
{chroot}{anvil_extra}}}
"""

# With DovecotServer(oauth2_introspection_url=...): XOAUTH2 and OAUTHBEARER check the token
# at the OAuth server (tests/support/oauthserver.py); PLAIN and LOGIN stay, for the password
# passdb above only, because the fixture's own client() and append() log in with it.
OAUTH2_AUTH_MECHANISMS = "plain login xoauth2 oauthbearer"
# No auth cache: a revoked or expired token is refused on its very next use. No failure
# delay (2 s by default; Dovecot still sends failures on a 0.5 s timer): tests refuse many
# tokens, and the product must not depend on the delay.
OAUTH2_AUTH_EXTRA = """\
auth_cache_size = 0
auth_failure_delay = 0
"""
# Dovecot delays every login from an IP that failed recently (2, 4, 8, up to 15 s); a test
# that refuses a token and then logs in with a good one must not wait for that.
OAUTH2_ANVIL_EXTRA = """\
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
"""
# The same two for a server of several users (DovecotServer(users=...)): refused passwords
# answered at once (on Dovecot's 0.5 s timer), no penalty for the next login.
QUICK_REFUSALS_AUTH_EXTRA = "auth_failure_delay = 0\n"
NO_PENALTY_ANVIL_EXTRA = OAUTH2_ANVIL_EXTRA
OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {dir}/dovecot-oauth2.conf.ext
}}
"""
# RFC 7662 introspection by POST (token=...); the IMAP login name must equal the answer's
# `username`, and `active` must be true. No tokeninfo_url: every login asks introspection.
OAUTH2_CONFIG = """\
introspection_mode = post
introspection_url = {introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 10000
"""
