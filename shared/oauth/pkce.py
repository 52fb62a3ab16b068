"""PKCE (RFC 7636, S256) and the state value of one authorization request."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def challenge_of(verifier: str) -> str:
    """The S256 code challenge of a verifier."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization-code request: a fresh verifier and state, and the URL to open."""

    redirect_uri: str
    verifier: str = field(default_factory=lambda: _b64url(secrets.token_bytes(48)))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def url(self, auth_url: str, *, client_id: str, scope: str, login_hint: str) -> str:
        """The URL the person opens; asks for offline access so a refresh token comes back."""
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": self.state,
            "code_challenge": challenge_of(self.verifier),
            "code_challenge_method": "S256",
            "access_type": "offline",  # Google: return a refresh token
            "prompt": "consent",  # Google: return it again on a second authorization
            "login_hint": login_hint,
        }
        separator = "&" if "?" in auth_url else "?"
        return f"{auth_url}{separator}{urlencode(query)}"
