"""The token endpoint (RFC 6749): refresh and code grants over verified TLS, errors classified."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from shared.errors import MailboxError, MailboxRejectedError, MailboxUnavailableError
from shared.tls import client_context

TIMEOUT = 15.0
TRANSIENT_CODES = {"temporarily_unavailable", "server_error", "slow_down"}


@dataclass(frozen=True)
class TokenGrant:
    """What the token endpoint gave: an access token, its lifetime, maybe a new refresh token.

    `refresh_expires_in` is set where the provider tells when the consent ends.
    """

    access_token: str = field(repr=False)
    expires_in: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_in: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token endpoint that redirects is misconfigured: never re-send the secret elsewhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class TokenEndpoint:
    """Talks to one token URL as one client (client_secret_post; public clients have none)."""

    def __init__(
        self, url: str, client_id: str, client_secret: str | None, *, timeout: float = TIMEOUT
    ) -> None:
        self.url = url
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=client_context(None)), _NoRedirect()
        )

    def refresh(self, refresh_token: str, scope: str) -> TokenGrant:
        """A new access token (and maybe a rotated refresh token) for a refresh token."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": scope}
        return self._grant(form)

    def exchange_code(self, code: str, *, redirect_uri: str, verifier: str) -> TokenGrant:
        """Tokens for the code of an authorization-code flow with PKCE."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self._grant(form)

    def _grant(self, form: dict[str, str]) -> TokenGrant:
        form = {**form, "client_id": self._client_id}
        if self._client_secret:
            form["client_secret"] = self._client_secret
        body = self._post(form)
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(token, str) or not token:
            raise MailboxUnavailableError("oauth_unavailable", f"{self._where}: no access token")
        refresh = body.get("refresh_token")
        refresh_life = body.get("refresh_token_expires_in")
        return TokenGrant(
            token,
            float(lifetime),
            refresh if isinstance(refresh, str) and refresh else None,
            float(refresh_life) if isinstance(refresh_life, int | float) else None,
        )

    @property
    def _where(self) -> str:
        parts = urlsplit(self.url)
        return f"token endpoint {parts.scheme}://{parts.netloc}{parts.path}"

    def _post(self, form: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url,
            data=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return _json(response.read())
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code, _json(exc.read())) from exc
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS, broken JSON
            raise MailboxUnavailableError(
                "oauth_unavailable", f"{self._where}: {type(exc).__name__}: {exc}"
            ) from exc

    def _refused(self, status: int, body: dict[str, Any]) -> MailboxError:
        """4xx with an OAuth error code is permanent (revoked, bad client); else transient."""
        code = str(body.get("error") or "")
        detail = str(body.get("error_description") or "")[:200]
        text = f"{self._where} refused ({status} {code or 'no error code'})"
        text += f": {detail}" if detail else ""
        if status >= 500 or status == 429 or code in TRANSIENT_CODES or not code:
            return MailboxUnavailableError("oauth_unavailable", text)
        return MailboxRejectedError(f"oauth_{code}"[:60], text)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
