"""Attachment files on disk, stored once each under their sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from mailsupport.errors import TemporaryError


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
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename: a crash never leaves a partial file
            # under a digest name.
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
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
