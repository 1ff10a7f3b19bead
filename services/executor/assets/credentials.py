"""Where the site's Synapse personal access token is kept.

The token is a bearer credential for the user's whole Synapse account, so it lives in its own
owner-only file rather than in a general config file that might be shared or logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from services.executor.assets.errors import SynapseLoginRequired

SYNAPSE_CREDENTIALS_FILE = "synapse.json"


def save_synapse_token(token: str, config_dir: Path) -> Path:
    """Store ``token`` in ``<config_dir>/synapse.json`` readable by the owner only; returns the path."""
    token = token.strip()
    if not token:
        raise ValueError("the Synapse personal access token is empty")
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_dir / SYNAPSE_CREDENTIALS_FILE
    # mkstemp creates the file 0600 from the start, so the token is never briefly world-readable,
    # and the rename means a crash cannot leave a half-written credentials file behind.
    fd, tmp_name = tempfile.mkstemp(dir=config_dir, prefix=".synapse-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"auth_token": token}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_synapse_token(config_dir: Path) -> str | None:
    """The stored token, or ``None`` when none was saved. A damaged file is an error, not ``None``,
    so the user learns their login is broken instead of seeing a generic "not logged in"."""
    path = config_dir / SYNAPSE_CREDENTIALS_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        token = json.loads(raw).get("auth_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token.strip():
        raise SynapseLoginRequired(f"the Synapse credentials file {path} is unreadable")
    return token.strip()
