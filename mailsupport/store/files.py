"""Files on disk: the data directory kept private, and attachments stored once each under
their sha256."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from mailsupport.errors import TemporaryError

# Everything mailsupport creates in the data directory holds mail or keys: for its owner only,
# whatever the process umask (which stays as it is: files an agent saves elsewhere follow it).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Make `path` a directory, creating it and any missing parents with mode 0700.

    A directory that exists already keeps its mode: an operator may have shared it with a
    group on purpose (`doctor` fails when other users can get in)."""
    missing: list[Path] = []
    while not os.path.lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # another process was first; checked below
        # The umask only takes permissions away: this gives the owner back what it took
        # (through a descriptor: never onto whatever a symbolic link put here meanwhile).
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(directory, flags)
        except PermissionError:  # a umask that took the owner's read permission too
            os.chmod(directory, PRIVATE_DIR_MODE)
            continue
        try:
            os.fchmod(fd, PRIVATE_DIR_MODE)
        finally:
            os.close(fd)
    target = missing[0] if missing else path
    if not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))


def private_file(path: Path) -> bool:
    """Create `path` empty with mode 0600 unless something is there; True when created.

    For files that others create on our behalf with a mode of their own choosing (SQLite
    gives its database 0644 less the umask, and its -wal and -shm files the database's)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


class AttachmentStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` durably (once) and return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            return digest
        try:
            private_dir(target.parent)
            # Write beside the target and rename: a crash never leaves a partial file
            # under a digest name.
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(fd, PRIVATE_FILE_MODE)  # mkstemp's 0600 less the umask: 0600
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, target)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise TemporaryError(
                f"cannot store an attachment in {self.root}: {error.strerror}; "
                "free space or fix permissions and try again"
            ) from error
        return digest

    def get(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()
