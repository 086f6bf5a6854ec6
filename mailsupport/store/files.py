"""Files on disk: the data directory kept private, and attachments stored once each under
their sha256 (MAILSUPPORT_ATTACHMENTS=files; store/attachments.py chooses the place)."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mailsupport.errors import NotFoundError, PermanentError, TemporaryError

# Everything mailsupport creates in the data directory holds mail or keys: for its owner only,
# whatever the process umask (which stays as it is: files an agent saves elsewhere follow it).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# Attachments are read, written and copied this much at a time, as files and in the database.
CHUNK_BYTES = 1024 * 1024
_HEX = frozenset("0123456789abcdef")


class AttachmentMissing(NotFoundError):
    """An attachment's content is not in the place asked (it may be in the other one)."""


class AttachmentDamaged(PermanentError):
    """Stored content that is not what its sha256 says: never copied, never relied on."""


def check_digest(sha256: str) -> str:
    if not _is_digest(sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")
    return sha256


def _is_digest(text: str) -> bool:
    return len(text) == 64 and _HEX.issuperset(text)


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
    """Attachment contents as files under `root`: ab/abcdef..., one per distinct content,
    named by its sha256. Every method takes the connection the database place needs
    (store/blobs.py) and ignores it: a file is written at once, outside the transaction, so
    a message rolled back after its attachments were written leaves them behind, unused."""

    name = "files"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / check_digest(sha256)

    def put(self, session: Any, data: bytes) -> str:
        """Store `data` durably (once) and return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.path_for(digest).exists():
            self._write(digest, [data], verify=False)
        return digest

    def size_of(self, connection: Any, sha256: str) -> int | None:
        """The stored content's size; None when it is not here."""
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def chunks(self, connection: Any, sha256: str) -> Iterator[bytes]:
        """The content, CHUNK_BYTES at a time. Raises AttachmentMissing at once (before the
        first piece is asked for) when there is no such file."""
        try:
            handle = self.path_for(sha256).open("rb")
        except FileNotFoundError:
            raise AttachmentMissing(f"no file for attachment {sha256}") from None
        return _pieces(handle)

    def copy_in(self, connection: Any, sha256: str, size: int, chunks: Iterable[bytes]) -> int:
        """Write content that arrives in pieces under `sha256`, checking that it is what the
        digest says (AttachmentDamaged, and nothing left behind, when not). The bytes
        written (`size` is the database place's: a file knows its own)."""
        return self._write(check_digest(sha256), chunks, verify=True)

    def remove(self, connection: Any, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def digest_page(self, connection: Any, after: str, limit: int) -> list[str]:
        """Up to `limit` stored digests after `after`, in order (one directory listed at a
        time, never the whole store)."""
        found: list[str] = []
        try:
            prefixes = sorted(p for p in os.listdir(self.root) if len(p) == 2 and p >= after[:2])
        except FileNotFoundError:
            return found
        for prefix in prefixes:
            try:
                names = sorted(os.listdir(self.root / prefix))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if name > after and name.startswith(prefix) and _is_digest(name):
                    found.append(name)
                    if len(found) == limit:
                        return found
        return found

    def _write(self, digest: str, chunks: Iterable[bytes], *, verify: bool) -> int:
        target = self.path_for(digest)
        try:
            private_dir(target.parent)
            # Write beside the target and rename: a crash never leaves a partial file
            # under a digest name.
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                size, check = 0, hashlib.sha256()
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(fd, PRIVATE_FILE_MODE)  # mkstemp's 0600 less the umask: 0600
                    for piece in chunks:
                        handle.write(piece)
                        size += len(piece)
                        if verify:
                            check.update(piece)
                    handle.flush()
                    os.fsync(handle.fileno())
                if verify and check.hexdigest() != digest:
                    raise AttachmentDamaged(
                        f"attachment {digest}: its content has sha256 {check.hexdigest()}"
                    )
                os.replace(temp, target)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise TemporaryError(
                f"cannot store an attachment in {self.root}: {error.strerror}; "
                "free space or fix permissions and try again"
            ) from error
        return size


def _pieces(handle: Any) -> Iterator[bytes]:
    with handle:
        while piece := handle.read(CHUNK_BYTES):
            yield piece
