"""Who is calling: API tokens, compared by hash so the table of tokens never holds them in clear."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from shared.settings import Settings


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthenticator:
    def __init__(self, users: dict[str, str], admins: set[str]) -> None:
        """``users`` maps the sha256 hex of a token to a user name."""
        self._users = users
        self._admins = admins

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuthenticator:
        return cls(dict(settings.api_token_digests), set(settings.admins))

    def authenticate(self, authorization: str | None) -> Caller | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        digest = token_digest(authorization[7:].strip())
        for known, user in self._users.items():
            if hmac.compare_digest(known, digest):
                return Caller(user, user in self._admins)
        return None
