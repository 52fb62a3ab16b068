"""A small OAuth2 server for the tests: authorize, token (code + PKCE, refresh), introspection.

It runs in a thread on 127.0.0.1 at the fixed port Dovecot's oauth2 passdb introspects
(MAILINTAKE_TEST_OAUTH_PORT). Every person consents at once: /authorize redirects back with
a code for the `login_hint` user. Tokens can be short-lived, rotated and revoked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "mailintake-test-client"
CLIENT_SECRET = "client-secret-" + secrets.token_hex(8)


def oauth_port() -> int:
    return int(os.environ.get("MAILINTAKE_TEST_OAUTH_PORT", "10180"))


@dataclass
class Grant:
    """A refresh token's grant: whose it is, and whether it still works."""

    username: str
    revoked: bool = False


@dataclass
class OAuthState:
    """What the server issued and was asked; the tests read and change it."""

    access_lifetime: float = 3600.0
    rotate: bool = False
    refresh_lifetime: float | None = None  # told to clients as refresh_token_expires_in
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)  # grant_type of each successful /token
    refused: list[str] = field(default_factory=list)  # error of each refused /token
    introspected: list[bool] = field(default_factory=list)  # active? per introspection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_refresh_token(self, username: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[token] = Grant(username)
        return token

    def issue_access_token(self, username: str, lifetime: float | None = None) -> str:
        token = "at-" + secrets.token_urlsafe(24)
        life = self.access_lifetime if lifetime is None else lifetime
        self.access_tokens[token] = (username, time.monotonic() + life)
        return token

    def revoke_user(self, username: str) -> None:
        """Consent withdrawn: every refresh and access token of the user stops working."""
        with self.lock:
            for grant in self.refresh_tokens.values():
                if grant.username == username:
                    grant.revoked = True
            for token, (user, _ends) in list(self.access_tokens.items()):
                if user == username:
                    self.access_tokens[token] = (user, 0.0)

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token, (user, _ends) in list(self.access_tokens.items()):
                self.access_tokens[token] = (user, 0.0)

    def active_refresh_tokens(self, username: str) -> list[str]:
        return [
            t for t, g in self.refresh_tokens.items() if g.username == username and not g.revoked
        ]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *_args: Any) -> None:  # quiet: tests read the state instead
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/authorize":
            self._json(404, {"error": "not_found"})
            return
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256":
            self._json(400, {"error": "invalid_request"})
            return
        code = "code-" + secrets.token_urlsafe(16)
        with self.server.state.lock:
            self.server.state.codes[code] = q
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        self.send_response(302)
        self.send_header("Location", target)
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = urlsplit(self.path).path
        if path == "/introspect":
            self._json(200, self._introspect(form.get("token", "")))
        elif path == "/token":
            status, body = self._token(form)
            self._json(status, body)
        else:
            self._json(404, {"error": "not_found"})

    def _introspect(self, token: str) -> dict[str, Any]:
        state = self.server.state
        with state.lock:
            user, ends = state.access_tokens.get(token, ("", 0.0))
            active = bool(user) and time.monotonic() < ends
            state.introspected.append(active)
        return {"active": active, "username": user}

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        state = self.server.state
        with state.lock:
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                state.refused.append("invalid_client")
                return 401, {"error": "invalid_client"}
            kind = form.get("grant_type", "")
            user = (
                self._code_user(form) if kind == "authorization_code" else self._refresh_user(form)
            )
            if user is None:
                state.refused.append("invalid_grant")
                return 400, {"error": "invalid_grant", "error_description": "grant not valid"}
            state.grants.append(kind)
            body: dict[str, Any] = {
                "access_token": state.issue_access_token(user),
                "token_type": "Bearer",
                "expires_in": state.access_lifetime,
            }
            if kind == "authorization_code" or state.rotate:
                body["refresh_token"] = state.issue_refresh_token(user)
                if state.refresh_lifetime is not None:
                    body["refresh_token_expires_in"] = state.refresh_lifetime
            return 200, body

    def _code_user(self, form: dict[str, str]) -> str | None:
        request = self.server.state.codes.pop(form.get("code", ""), None)
        if request is None or request.get("redirect_uri") != form.get("redirect_uri"):
            return None
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return request.get("login_hint") if challenge == request.get("code_challenge") else None

    def _refresh_user(self, form: dict[str, str]) -> str | None:
        state = self.server.state
        grant = state.refresh_tokens.get(form.get("refresh_token", ""))
        if grant is None or grant.revoked:
            return None
        if state.rotate:
            grant.revoked = True  # a rotated refresh token works once
        return grant.username

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: OAuthState) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


@dataclass(frozen=True)
class OAuthServer:
    """A running test server: its URLs and its state."""

    base_url: str
    state: OAuthState

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/authorize"


@contextmanager
def running_oauth_server(port: int | None = None) -> Iterator[OAuthServer]:
    """Serve on 127.0.0.1 (the fixed port Dovecot introspects unless `port` is given)."""
    server = _Server(oauth_port() if port is None else port, OAuthState())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield OAuthServer(f"http://127.0.0.1:{server.server_address[1]}", server.state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
