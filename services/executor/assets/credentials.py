"""Where the site's Synapse personal access token is kept.

The token is a bearer credential for the user's whole Synapse account, so it lives in its own
owner-only file rather than in a general config file that might be shared or logged.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.executor.assets.errors import SynapseLoginRequired
from shared.private_files import write_private

SYNAPSE_CREDENTIALS_FILE = "synapse.json"


def save_synapse_token(token: str, config_dir: Path) -> Path:
    """Store ``token`` in ``<config_dir>/synapse.json`` readable by the owner only; returns the path."""
    token = token.strip()
    if not token:
        raise ValueError("the Synapse personal access token is empty")
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Never briefly world-readable, and a crash cannot leave half a credentials file behind.
    return write_private(config_dir / SYNAPSE_CREDENTIALS_FILE, json.dumps({"auth_token": token}))


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
