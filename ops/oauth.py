"""`mailintake accounts add --auth oauth2 …` and `accounts authorize`: OAuth2 mailboxes."""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ops.context import Context
from ops.output import UserError, read_secret
from shared.accounts import Account
from shared.oauth.authorize import NoRefreshTokenError, authorization_url, save_grant
from shared.oauth.client import TokenGrant
from shared.oauth.endpoint import token_endpoint
from shared.oauth.pkce import AuthorizationRequest
from shared.store import Doc

AUTHORIZE_HELP = """\
Runs the OAuth2 authorization-code flow (with PKCE) for a person at this terminal:
prints the provider's URL to open in a browser, waits for the provider to redirect back
to a listener on 127.0.0.1 (a free port, or --port), exchanges the code for tokens and
stores the refresh token encrypted in the account. Nothing secret is printed.

With --paste nothing listens: after consenting, copy the address the browser was sent
to (it holds ?code=...) or just the code, and paste it here. Register the redirect URI
with the provider first: http://127.0.0.1 (any port) for Google desktop clients and
Microsoft "mobile and desktop" platforms.
"""
OAUTH_EPILOG = """\
OAuth2 (Gmail, Microsoft 365 and other servers that refuse passwords):
  --auth oauth2 --oauth-provider google|microsoft --client-id ID --client-secret-env VAR
  then `mailintake accounts authorize ACCOUNT_ID` to sign in once in a browser, or give
  an existing refresh token with --refresh-token-env VAR. A custom provider needs
  --token-url, --auth-url and --scope. Secrets are read from environment variables and
  stored encrypted, like passwords.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The OAuth2 options of `accounts add`."""
    g = parser.add_argument_group("OAuth2 (instead of a password)")
    g.add_argument("--auth", choices=["password", "oauth2"], default="password")
    g.add_argument("--oauth-provider", choices=["google", "microsoft", "custom"])
    g.add_argument("--client-id", help="the OAuth2 client (application) id")
    g.add_argument("--client-secret-env", metavar="VAR", help="read the client secret from $VAR")
    g.add_argument(
        "--refresh-token-env",
        metavar="VAR",
        help="read a refresh token from $VAR (else run `accounts authorize` afterwards)",
    )
    g.add_argument("--token-url", help="token endpoint (custom provider, or to override)")
    g.add_argument("--auth-url", help="authorization endpoint (custom provider, or to override)")
    g.add_argument("--scope", help="scopes, space-separated (default: the provider's for mail)")


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The auth mode and OAuth2 client of the new account (validated with the account)."""
    if args.auth != "oauth2":
        given = [
            f for f in ("oauth_provider", "client_id", "refresh_token_env") if getattr(args, f)
        ]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} needs --auth oauth2")
        return {"auth": "password"}
    if not args.oauth_provider or not args.client_id:
        raise UserError("--auth oauth2 needs --oauth-provider and --client-id")
    client = {
        "provider": args.oauth_provider,
        "client_id": args.client_id,
        "token_url": args.token_url,
        "auth_url": args.auth_url,
        "scope": args.scope,
    }
    return {"auth": "oauth2", "oauth": client}


def secret_fields(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """The encrypted client secret and refresh token, read from the environment."""
    fields: dict[str, Any] = {}
    if args.client_secret_env:
        secret = read_secret(args.client_secret_env, "client secret")
        fields["oauth_client_secret_enc"] = ctx.secrets.encrypt(secret)
    if args.refresh_token_env:
        token = read_secret(args.refresh_token_env, "refresh token")
        fields["oauth_refresh_token_enc"] = ctx.secrets.encrypt(token)
        fields["oauth_authorized_at"] = datetime.now(UTC)
    return fields


def register(sub: Any) -> None:
    """`accounts authorize ID`."""
    q = sub.add_parser(
        "authorize",
        help="sign an OAuth2 account in through a browser; stores the refresh token",
        description=AUTHORIZE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("account_id", metavar="ID")
    q.add_argument(
        "--paste", action="store_true", help="read the redirected URL or code from stdin"
    )
    q.add_argument("--port", type=int, default=0, help="loopback port to listen on (default: free)")
    q.add_argument(
        "--redirect-uri",
        help="with --paste: the redirect URI registered with the provider (default http://127.0.0.1/)",
    )
    q.add_argument(
        "--timeout", type=float, default=300.0, metavar="SECONDS", help="wait at most (default 300)"
    )
    q.set_defaults(func=cmd_authorize)


def show_fields(doc: Doc) -> Doc:
    """What `accounts show` says of OAuth2: the mode and the token times, never a secret."""
    if doc.get("auth") != "oauth2":
        return {"auth": doc.get("auth", "password")}
    return {
        "auth": "oauth2",
        "refresh_token": "stored (encrypted)" if doc.get("oauth_refresh_token_enc") else "missing",
        "access_token_expires": doc.get("oauth_access_expires_at"),
        "consent_expires": doc.get("oauth_refresh_expires_at"),
        "authorized_at": doc.get("oauth_authorized_at"),
    }


def _oauth_account(ctx: Context, account_id: str) -> Account:
    # By id in any tenant, on purpose: the operator names an account by its id (unique across
    # tenants); its tokens are then written in the tenant this finds.
    doc = ctx.store.accounts.find_one({"_id": account_id})
    if doc is None:
        raise UserError(f"no account with id {account_id!r} (see `mailintake accounts list`)")
    account = Account.model_validate(doc)
    if account.auth != "oauth2" or account.oauth is None:
        raise UserError(f"account {account.id} logs in with a password, not OAuth2")
    return account


def cmd_authorize(args: argparse.Namespace, ctx: Context) -> int:
    """Authorization code (PKCE) → tokens → refresh token stored encrypted; no secret shown."""
    account = _oauth_account(ctx, args.account_id)
    endpoint = token_endpoint(account, ctx.secrets)
    if args.paste:
        request = AuthorizationRequest(args.redirect_uri or "http://127.0.0.1/")
        _show_url(request, account, paste=True)
        code = _pasted_code(sys.stdin.readline(), request.state)
    else:
        code, request = _loopback_code(args, account)
    now = datetime.now(UTC)
    grant = endpoint.exchange_code(
        code, redirect_uri=request.redirect_uri, verifier=request.verifier
    )
    _store(ctx, account, grant, now)
    _report(account, grant, now)
    return 0


def _report(account: Account, grant: TokenGrant, now: datetime) -> None:
    expires = now + timedelta(seconds=grant.expires_in)
    print(f"account {account.id} authorized as {account.username}: refresh token stored encrypted")
    print(f"access token valid until {expires:%Y-%m-%d %H:%M:%S} UTC (stored encrypted)")
    if grant.refresh_expires_in:
        ends = now + timedelta(seconds=grant.refresh_expires_in)
        print(f"the provider ends this consent at {ends:%Y-%m-%d %H:%M:%S} UTC")
    print("the fetcher uses it within one lease period")


def _show_url(request: AuthorizationRequest, account: Account, *, paste: bool) -> None:
    url = authorization_url(account, request)
    print(f"Open this URL in a browser and sign in as {account.username}:\n\n  {url}\n")
    if paste:
        print("Then paste the address the browser was sent to (or the code) here:")
    else:
        print(f"Waiting for the redirect to {request.redirect_uri} ...")
    sys.stdout.flush()


def _pasted_code(line: str, state: str) -> str:
    """The code from a pasted redirect URL (its state checked) or a pasted bare code."""
    text = line.strip()
    if not text:
        raise UserError("nothing was pasted")
    if "code=" not in text and "error=" not in text:
        return text
    return _code_from_query(urlsplit(text).query or text, state)


def _code_from_query(query: str, state: str) -> str:
    params = {k: v[0] for k, v in parse_qs(query).items()}
    if "error" in params:
        detail = params.get("error_description", "")
        raise UserError(f"the provider refused the authorization: {params['error']} {detail}")
    if params.get("state") != state:
        raise UserError("the redirect does not belong to this authorization (state differs)")
    if not params.get("code"):
        raise UserError("the redirect holds no code")
    return params["code"]


class _Redirect(BaseHTTPRequestHandler):
    """Takes the one redirect from the browser and thanks the person."""

    server: _RedirectServer

    def log_message(self, *_args: Any) -> None:  # the query holds the code: never logged
        pass

    def do_GET(self) -> None:
        query = urlsplit(self.path).query
        if not query:
            self.send_error(404)
            return
        self.server.query = query
        body = b"mailintake: done, you can close this window and return to the terminal.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.done.set()


class _RedirectServer(HTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Redirect)
        self.query = ""
        self.done = threading.Event()


def _loopback_code(args: argparse.Namespace, account: Account) -> tuple[str, AuthorizationRequest]:
    """Listen on 127.0.0.1, show the URL, and take the code from the redirect."""
    try:
        server = _RedirectServer(args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from exc
    request = AuthorizationRequest(f"http://127.0.0.1:{server.server_address[1]}/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _show_url(request, account, paste=False)
        if not server.done.wait(args.timeout):
            raise UserError(f"no redirect within {args.timeout:.0f}s (or use --paste)")
    finally:
        server.shutdown()
        server.server_close()
    return _code_from_query(server.query, request.state), request


def _store(ctx: Context, account: Account, grant: TokenGrant, now: datetime) -> None:
    try:
        save_grant(ctx.store, account, grant, ctx.secrets, now=now)
    except NoRefreshTokenError as exc:
        raise UserError(str(exc)) from exc


def login_secret(ctx: Context, account: Account) -> str:
    """What `accounts test` logs in with: the password, or a valid access token."""
    if account.auth != "oauth2" or account.oauth is None:
        return ctx.secrets.decrypt(account.password_enc)
    from fetcher.adapters import MongoOAuthTokens
    from shared.oauth.tokens import AccessTokens

    tokens = AccessTokens(
        account.id,
        account.oauth.endpoints(account.protocol).scope,
        store=MongoOAuthTokens(ctx.store, account.tenant_id),
        box=ctx.secrets,
        endpoint=token_endpoint(account, ctx.secrets),
        clock=lambda: datetime.now(UTC),
    )
    return tokens.current().token
