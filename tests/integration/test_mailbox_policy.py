"""Mailbox hosts and credentials: inside addresses refused when the operator asks for it
(at `accounts add` and at connect time), CR/LF/NUL in credentials refused before anything is
sent — on the real store, broker and Dovecot."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail, settings_env
from tests.integration.test_fetcher_imap import add_account
from tests.integration.test_security import Run, cli
from tests.processes import StageProcesses, wait_until

pytestmark = pytest.mark.integration

__all__ = ["cli"]  # the fixture, shared with test_security
DENY = "MAILINTAKE_MAILBOX_DENY_PRIVATE"


def add(
    cli: Run, mailbox: Mailbox, *, username: str | None = None, password: str, stdin: bool = False
) -> tuple[int, str, str]:
    s = mailbox.server
    given = ("--password-stdin",) if stdin else ("--password-env", "MI_PW")
    return cli(
        "accounts", "add", "--tenant", "t-net", "--owner", "owner", "--protocol", "imap",
        "--host", s.host, "--port", str(s.imaps_port), "--username", username or mailbox.user,
        *given, "--ca-file", s.ca_file, password="" if stdin else password,
    )  # fmt: skip


def test_a_mailbox_on_an_inside_address_is_refused_at_add_only_when_the_operator_asks(
    cli: Run, mailbox: Mailbox, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DENY, "true")
    code, _out, err = add(cli, mailbox, password=mailbox.server.password)
    assert code == 2
    assert "mailbox host '127.0.0.1' resolves to an address that is not allowed (loopback)" in err
    assert "MAILINTAKE_MAILBOX_ALLOW_NETWORKS" in err
    assert store.accounts.count_documents({"tenant_id": "t-net"}) == 0
    monkeypatch.setenv("MAILINTAKE_MAILBOX_ALLOW_NETWORKS", "127.0.0.0/8")
    assert add(cli, mailbox, password=mailbox.server.password)[0] == 0
    monkeypatch.delenv(DENY)  # the default: local mail servers are normal on premises
    monkeypatch.delenv("MAILINTAKE_MAILBOX_ALLOW_NETWORKS")
    assert add(cli, mailbox, password=mailbox.server.password)[0] == 0


@pytest.mark.parametrize("bad", ["\r\n", "\n", "\r", "\x00"])
def test_credentials_with_cr_lf_or_nul_are_refused_naming_the_field_not_the_secret(
    cli: Run, mailbox: Mailbox, store: Store, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    secret = f"Pa55{bad}A1 LOGOUT"
    stdin = "\x00" in bad  # no environment variable can hold a NUL
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    code, _out, err = add(cli, mailbox, password=secret, stdin=stdin)
    assert code == 2 and "--password: the password must not contain CR, LF or NUL" in err
    assert "Pa55" not in err
    code, _out, err = add(cli, mailbox, username=f"user{bad}x", password="fine")
    assert code == 2 and "--username: the user name must not contain CR, LF or NUL" in err
    assert "user" not in err.replace("--username", "").replace("user name", "")
    assert store.accounts.count_documents({"tenant_id": "t-net"}) == 0


def test_with_deny_private_the_fetcher_refuses_to_connect_and_the_account_says_why(
    settings: Settings, store: Store, mailbox: Mailbox, tmp_path: Path
) -> None:
    account = add_account(store, settings, mailbox, tenant_id="t-net")
    procs = StageProcesses(settings_env(settings) | {DENY: "true"}, tmp_path)
    procs.start("fetcher")
    try:
        wait_until(
            lambda: (
                (store.accounts.find_one({"_id": account.id}) or {}).get("state", {}).get("status")
                == "error"
            ),
            30,
            "the account in error",
            on_timeout=procs.logs,
        )
    finally:
        procs.stop_all()
    state = (store.accounts.find_one({"_id": account.id}) or {})["state"]
    assert state["reason"] == "address_refused"
    assert "not allowed (loopback)" in state["message"]
    assert mailbox.flags() == []  # nothing was read


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_the_connection_goes_to_the_address_that_was_checked(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """A DNS answer that changes after the check (rebinding) does not move the connection:
    the checked address is the one connected to, and TLS is still verified for the name."""
    from fetcher.imap import ImapClientMailbox
    from fetcher.pop3 import PoplibMailbox
    from shared import netpolicy
    from shared.accounts import AccountConfig

    mailbox.append(make_mail("a@x.example", "one"))
    monkeypatch.setenv(DENY, "true")
    monkeypatch.setenv("MAILINTAKE_MAILBOX_ALLOW_NETWORKS", "127.0.0.0/8")
    netpolicy._process_mailbox_policy.cache_clear()
    monkeypatch.setattr(netpolicy, "_process_mailbox_policy", netpolicy.mailbox_policy)
    real, asked = socket.getaddrinfo, []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        if host == "localhost" and asked.count("localhost") > 1:  # after the check: elsewhere
            return real("192.0.2.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    s = mailbox.server
    port = s.imaps_port if protocol == "imap" else s.pop3s_port
    account = AccountConfig(
        tenant_id="t-net", owner_id="owner", protocol=protocol, host="localhost", port=port,
        security="ssl", username=mailbox.user, ca_file=s.ca_file,
    )  # fmt: skip
    if protocol == "imap":
        with ImapClientMailbox(account, s.password, timeout=5) as imap:
            assert imap.client is not None
            assert imap.client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    else:
        with PoplibMailbox(account, s.password, timeout=5) as pop:
            assert len(pop.listing()) == 1
    assert asked.count("localhost") == 1  # the check's lookup only; then 127.0.0.1 itself
    assert "127.0.0.1" in asked
