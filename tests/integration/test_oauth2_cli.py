"""`accounts add --auth oauth2` and `accounts authorize`, end to end against the local servers."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from shared.crypto import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail, settings_env
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer, running_oauth_server
from tests.services import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server() as server:
        yield server


def env_of(settings: Settings) -> dict[str, str]:
    return {**settings_env(settings), "MI_CLIENT_SECRET": CLIENT_SECRET}


def mailintake(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO,
        env=env_of(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_oauth(settings: Settings, mailbox: Mailbox, oauth: OAuthServer, *extra: str) -> str:
    s = mailbox.server
    result = mailintake(
        settings,
        "accounts", "add", "--tenant", "t-oauth-cli", "--owner", "owner-1",
        "--protocol", "imap", "--host", s.host, "--port", str(s.imaps_port),
        "--username", mailbox.user, "--ca-file", s.ca_file,
        "--auth", "oauth2", "--oauth-provider", "custom", "--client-id", CLIENT_ID,
        "--client-secret-env", "MI_CLIENT_SECRET", "--token-url", oauth.token_url,
        "--auth-url", oauth.auth_url, "--scope", "mail", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start_authorize(settings: Settings, account_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "accounts", "authorize", account_id, *extra],
        cwd=REPO,
        env=env_of(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def printed_url(proc: subprocess.Popen[str]) -> str:
    """The authorization URL the command prints (it keeps running)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip().startswith("http"):
            return line.strip()
    raise AssertionError(f"no URL printed: {proc.communicate(timeout=10)}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def redirect_location(url: str) -> str:
    """Where the provider sends the browser after consent (not followed)."""
    opener = urllib.request.build_opener(_NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as sent:
        opener.open(url, timeout=10)
    sent.value.close()
    assert sent.value.code == 302
    return str(sent.value.headers["Location"])


def open_in_browser(url: str) -> None:
    """What the person's browser does: follow the redirect to the command's listener."""
    with urllib.request.urlopen(url, timeout=10) as page:
        page.read()


def secrets_of(oauth: OAuthServer) -> list[str]:
    return [*oauth.state.refresh_tokens, *oauth.state.access_tokens, CLIENT_SECRET]


def test_authorize_through_the_loopback_redirect_stores_the_refresh_token_encrypted(
    settings: Settings, store: Store, mailbox: Mailbox, oauth: OAuthServer
) -> None:
    mailbox.append(make_mail("a@x.org", "one"))
    account_id = add_oauth(settings, mailbox, oauth)
    proc = start_authorize(settings, account_id)
    url = printed_url(proc)
    assert "code_challenge_method=S256" in url and "state=" in url
    browser = threading.Thread(target=open_in_browser, args=(url,))
    browser.start()
    out, err = proc.communicate(timeout=30)
    browser.join(10)
    assert proc.returncode == 0, err
    assert "refresh token stored encrypted" in out
    assert oauth.state.grants == ["authorization_code"]
    doc = store.accounts.find_one({"_id": account_id}) or {}
    assert settings.secret_key is not None
    box = SecretBox(settings.secret_key.get_secret_value())
    assert [box.decrypt(doc["oauth_refresh_token_enc"])] == oauth.state.active_refresh_tokens(
        mailbox.user
    )
    shown = [
        mailintake(settings, "accounts", *args)
        for args in (["show", account_id], ["list"], ["test", account_id])
    ]
    assert "stored (encrypted)" in shown[0].stdout and "oauth2" in shown[1].stdout
    assert shown[2].returncode == 0 and shown[2].stdout.startswith("ok: logged in")
    printed = out + err + repr(doc) + "".join(r.stdout + r.stderr for r in shown)
    assert not [s for s in secrets_of(oauth) if s in printed]


def test_authorize_with_a_pasted_redirect_checks_its_state(
    settings: Settings, store: Store, mailbox: Mailbox, oauth: OAuthServer
) -> None:
    account_id = add_oauth(settings, mailbox, oauth)
    proc = start_authorize(settings, account_id, "--paste")
    location = redirect_location(printed_url(proc))
    forged = location.replace("state=", "state=x")
    _out, err = proc.communicate(forged + "\n", timeout=30)
    assert proc.returncode == 2 and "state differs" in err
    assert oauth.state.grants == []

    proc = start_authorize(settings, account_id, "--paste")
    _out, err = proc.communicate(redirect_location(printed_url(proc)) + "\n", timeout=30)
    assert proc.returncode == 0, err
    assert oauth.state.grants == ["authorization_code"]
    doc = store.accounts.find_one({"_id": account_id}) or {}
    assert doc.get("oauth_refresh_token_enc") and doc.get("oauth_authorized_at")


def test_add_explains_what_oauth2_needs(settings: Settings, mailbox: Mailbox) -> None:
    s = mailbox.server
    base = ["accounts", "add", "--tenant", "t", "--owner", "o", "--protocol", "imap",
            "--host", s.host, "--username", mailbox.user]  # fmt: skip
    result = mailintake(settings, *base, "--auth", "oauth2", "--oauth-provider", "google")
    assert result.returncode == 2 and "--client-id" in result.stderr
    result = mailintake(
        settings, *base, "--auth", "oauth2", "--oauth-provider", "custom", "--client-id", "c"
    )
    assert result.returncode == 2 and "--token-url" in result.stderr
    result = mailintake(settings, *base)
    assert result.returncode == 2 and "--password-env" in result.stderr
