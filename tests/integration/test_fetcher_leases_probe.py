"""Leases on the real store (claim, renew, expire, release) and `accounts test` on Dovecot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fetcher.leases import MongoLeases
from fetcher.probe import probe
from shared.accounts import AccountConfig
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox
from tests.integration.test_fetcher_imap import add_account

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_lease_has_one_holder_until_it_expires_or_is_released(
    mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    account = add_account(store, settings, mailbox)
    a, b = MongoLeases(store, "a", 30), MongoLeases(store, "b", 30)
    assert a.claim(account, now=T0) is not None
    assert b.claim(account, now=T0 + timedelta(seconds=10)) is None
    assert a.renew(account, now=T0 + timedelta(seconds=20))
    assert b.claim(account, now=T0 + timedelta(seconds=40)) is None  # renewed until 50
    assert b.claim(account, now=T0 + timedelta(seconds=51)) is not None  # expired: taken over
    assert not a.renew(account, now=T0 + timedelta(seconds=52))
    b.release(account)
    assert a.claim(account, now=T0 + timedelta(seconds=53)) is not None


def test_a_disabled_account_cannot_be_claimed_or_renewed(
    mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    account = add_account(store, settings, mailbox)
    leases = MongoLeases(store, "a", 30)
    assert leases.claim(account, now=T0) is not None
    store.accounts.update_one({"_id": account.id}, {"$set": {"enabled": False}})
    assert not leases.renew(account, now=T0)
    assert leases.claim(account, now=T0) is None


def config(mailbox: Mailbox, **overrides: object) -> AccountConfig:
    s = mailbox.server
    fields: dict[str, object] = {
        "tenant_id": "t",
        "owner_id": "o",
        "protocol": "imap",
        "host": s.host,
        "port": s.imaps_port,
        "username": mailbox.user,
        "ca_file": s.ca_file,
    }
    if overrides.get("port") == "pop3s":
        overrides = {**overrides, "port": s.pop3s_port}
    return AccountConfig.model_validate({**fields, **overrides})


@pytest.mark.parametrize(
    ("overrides", "password", "reason"),
    [
        ({}, "", "ok"),
        ({"protocol": "pop3", "port": "pop3s"}, "", "ok"),
        ({"host": "no-such-host.invalid"}, "", "name_resolution"),
        ({"port": 1}, "", "connection_refused"),
        ({"ca_file": None}, "", "tls_certificate"),
        ({}, "wrong-password", "login_rejected"),
        ({"protocol": "pop3", "port": "pop3s"}, "wrong-password", "login_rejected"),
        ({"folder": "NoSuchFolder"}, "", "folder_missing"),
    ],
)
def test_accounts_test_names_what_failed(
    mailbox: Mailbox, overrides: dict[str, object], password: str, reason: str
) -> None:
    result = probe(config(mailbox, **overrides), password or mailbox.server.password, timeout=5)
    assert (result.ok, result.reason) == (reason == "ok", reason), result.message
    if password:
        assert password not in result.summary
