"""Dovecot's configuration for a test server (imapservers.DovecotServer), and the system
users and groups it may run as."""

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
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
# IDLE: inotify normally wakes Dovecot at once; this is the fallback poll.
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={dir}/home
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
{chroot}}}
"""
