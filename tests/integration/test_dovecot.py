"""The real Dovecot: TLS verified against the test CA, STARTTLS, login failures."""

from __future__ import annotations

import pytest

from fetcher.imap import ImapClientMailbox
from shared.accounts import AccountConfig
from shared.errors import MailboxRejectedError
from tests.conftest import Mailbox, make_mail

pytestmark = pytest.mark.integration


def account(mailbox: Mailbox, **overrides: object) -> AccountConfig:
    s = mailbox.server
    fields: dict[str, object] = {
        "tenant_id": "t",
        "owner_id": "o",
        "protocol": "imap",
        "host": s.host,
        "port": s.imaps_port,
        "security": "ssl",
        "username": mailbox.user,
        "ca_file": s.ca_file,
    }
    return AccountConfig.model_validate({**fields, **overrides})


def test_tls_login_verified_against_the_test_ca(mailbox: Mailbox) -> None:
    mailbox.append(make_mail("a@x.org", "hello"))
    with ImapClientMailbox(account(mailbox), mailbox.server.password) as box:
        state = box.select("INBOX")
        assert state.uidvalidity > 0
        assert box.search(["ALL"]) == [1]
        assert b"IDLE" in box.capabilities()


def test_starttls_login(mailbox: Mailbox) -> None:
    config = account(mailbox, port=mailbox.server.imap_port, security="starttls")
    with ImapClientMailbox(config, mailbox.server.password) as box:
        assert box.select("INBOX").uidvalidity > 0


def test_certificate_of_an_untrusted_ca_is_refused(mailbox: Mailbox) -> None:
    with (
        pytest.raises(MailboxRejectedError) as info,
        ImapClientMailbox(account(mailbox, ca_file=None), mailbox.server.password),
    ):
        pass
    assert info.value.reason == "tls_certificate"


def test_wrong_password_is_a_rejected_login(mailbox: Mailbox) -> None:
    with (
        pytest.raises(MailboxRejectedError) as info,
        ImapClientMailbox(account(mailbox), "wrong-password"),
    ):
        pass
    assert info.value.reason == "login_rejected"
    assert "wrong-password" not in str(info.value)
