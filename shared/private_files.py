"""Files that hold a secret (API tokens, signing keys, password hashes) are written owner-only.

Every byte goes to a fresh temporary file in the same directory, created 0600 (``mkstemp``) and
set 0600 again on its descriptor (``fchmod``, so neither the umask nor a later ``chmod`` matters);
only the complete file then takes the final name, by ``rename`` (replacing whatever was there, a
file of any mode or a symlink, without writing through it) or by ``link`` (never replacing).
So the secret is never readable by others, not even briefly, and a crash leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE = 0o600


def write_private(path: Path, data: bytes | str, *, exclusive: bool = False) -> Path:
    """Write ``data`` (str: UTF-8) to ``path`` with mode 0600, whatever mode a file there had.

    ``exclusive``: fail with ``FileExistsError`` if ``path`` exists instead of replacing it (two
    processes creating one key at once: exactly one succeeds, and the other's key is never seen).
    """
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and refuses an existing name
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after link (or a failure); after replace it is gone already
    _sync_directory(path.parent)
    return path


def _sync_directory(directory: Path) -> None:
    """Make the new name durable too (best effort: some filesystems cannot open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
