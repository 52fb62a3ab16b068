"""Leases on the real store (claim, renew, expire, release, races) and `accounts test`."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from pymongo import MongoClient, monitoring

import shared.store
from fetcher.leases import MongoLeases
from fetcher.probe import probe
from fetcher.replicas import MongoReplicas, fair_share
from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from shared.accounts import Account, AccountConfig
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox
from tests.integration.test_fetcher_imap import add_account
from tests.processes import wait_until

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


def test_a_disabled_account_cannot_be_claimed(
    mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    """Claims read the accounts afresh; a renewal does not (the supervisor renews only the
    accounts its round read as enabled, and stops the others' runners)."""
    account = add_account(store, settings, mailbox)
    a, b = MongoLeases(store, "a", 30), MongoLeases(store, "b", 30)
    assert a.claim(account, now=T0) is not None
    store.accounts.update_one({"_id": account.id}, {"$set": {"enabled": False}})
    a.release(account)
    assert b.claim(account, now=T0) is None
    assert a.holders([account.id], now=T0) == {account.id: None}


def test_an_expired_lease_is_not_renewed_but_claimed_again(
    mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    account = add_account(store, settings, mailbox)
    a = MongoLeases(store, "a", 30)
    assert a.claim(account, now=T0) is not None
    assert not a.renew(account, now=T0 + timedelta(seconds=31))  # its holder stopped at 30
    assert a.claim(account, now=T0 + timedelta(seconds=31)) is not None
    assert a.holders([account.id], now=T0 + timedelta(seconds=32)) == {account.id: "a"}
    a.release(account)
    assert a.holders([account.id], now=T0 + timedelta(seconds=32)) == {account.id: None}


THREADS, ROUNDS, LEASE = 6, 40, 30


def race_round(
    contenders: list[MongoLeases], account: Account, until: datetime, holder_lag: float
) -> list[bool]:
    """Everyone but the holder claims (their clocks: 1 s after `until`) at the same instant,
    and the holder renews (its clock: 1 s before) `holder_lag` seconds later; who got the
    lease. A renewal reads nothing, so without a lag it would all but always come first."""
    current = contenders[0].current(account.id)
    assert current is not None
    barrier = threading.Barrier(len(contenders))
    won = [False] * len(contenders)

    def contend(i: int) -> None:
        leases = contenders[i]
        barrier.wait()
        if leases.holder == current.holder:
            time.sleep(holder_lag)
            won[i] = leases.renew(account, now=until - timedelta(seconds=1))
        else:
            won[i] = leases.claim(account, now=until + timedelta(seconds=1)) is not None

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(contenders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return won


def test_racing_replicas_win_each_term_exactly_once(
    mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    account = add_account(store, settings, mailbox)
    clients = [Store(settings.mongo_url.get_secret_value()) for _ in range(THREADS)]
    contenders = [MongoLeases(c, f"r{i}", LEASE) for i, c in enumerate(clients)]
    try:
        assert contenders[0].claim(account, now=T0) is not None
        grants = [("r0", T0, T0 + timedelta(seconds=LEASE))]  # (holder, from, until)
        for number in range(2, ROUNDS + 2):
            prior_holder, _from, until = grants[-1]
            # Every other round the renewal starts later than a claim's reads take.
            won = race_round(contenders, account, until, holder_lag=0.2 * (number % 2))
            assert won.count(True) == 1, won  # one winner per term, never two
            winner = contenders[won.index(True)].holder
            current = contenders[0].current(account.id)
            assert current is not None and (current.number, current.holder) == (number, winner)
            start = current.until - timedelta(seconds=LEASE)
            assert winner == prior_holder or start > until  # another holder starts after the end
            grants.append((winner, start, current.until))
        assert len({g[0] for g in grants}) > 1  # the lease did change hands in the race
    finally:
        for c in clients:
            c.close()


def test_live_replicas_are_those_whose_heartbeat_is_fresh(store: Store) -> None:
    a, b = MongoReplicas(store, "a", 30), MongoReplicas(store, "b", 30)
    a.beat(T0)
    assert b.live(T0) == 2  # a, and b itself even before its first beat
    assert b.live(T0 + timedelta(seconds=31)) == 1  # a stopped beating
    b.beat(T0)
    a.leave()
    assert b.live(T0) == 1


@pytest.mark.parametrize(
    ("accounts", "replicas", "share"), [(6, 1, 6), (6, 2, 3), (7, 2, 4), (2, 3, 1), (0, 2, 0)]
)
def test_a_fair_share_is_the_accounts_over_the_live_replicas_rounded_up(
    accounts: int, replicas: int, share: int
) -> None:
    assert fair_share(accounts, replicas) == share


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def supervised(settings: Settings, store: Store, broker: Broker) -> tuple[Supervisor, Clock]:
    fetcher_settings = FetcherSettings.model_validate(
        {**settings.model_dump(), "lease_seconds": 30}
    )
    clock = Clock(datetime.now(UTC))
    return Supervisor(fetcher_settings, store, threading.Event(), clock=clock, holder="a"), clock


def test_a_replica_stops_fetching_at_once_when_its_lease_was_taken(
    mailbox: Mailbox, store: Store, settings: Settings, supervised: tuple[Supervisor, Clock]
) -> None:
    sup, clock = supervised
    account = add_account(store, settings, mailbox)
    sup.tick()
    assert account.id in sup.runners
    runner = sup.runners[account.id].runner
    taker = MongoLeases(store, "b", 30)  # b's clock is 31 s ahead: it sees the lease expired
    assert taker.claim(account, now=clock.at + timedelta(seconds=31)) is not None
    clock.at += timedelta(seconds=10)
    sup.tick()  # the renewal finds the next term written by another
    assert account.id not in sup.runners and runner.stop.is_set()
    wait_until(lambda: not runner.alive(), timeout=10, what="the runner to end")
    assert taker.holders([account.id], now=clock.at) == {account.id: "b"}  # not released
    sup.shutdown()


def test_a_replica_that_cannot_renew_stops_before_its_lease_ends(
    mailbox: Mailbox, store: Store, settings: Settings, supervised: tuple[Supervisor, Clock]
) -> None:
    sup, clock = supervised
    account = add_account(store, settings, mailbox)
    sup.tick()
    runner = sup.runners[account.id].runner
    clock.at += timedelta(seconds=14)  # no tick reached the store for half a lease
    sup._expire(clock.at)
    assert account.id in sup.runners  # a renewal may still come in time
    clock.at += timedelta(seconds=7)  # the lease would end before the next tick
    sup._expire(clock.at)
    assert account.id not in sup.runners and runner.stop.is_set()
    wait_until(lambda: not runner.alive(), timeout=10, what="the runner to end")
    sup.shutdown()


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


class Commands(monitoring.CommandListener):
    """How many commands a client sent, by name: all but the continuations of a cursor (a
    query's documents past its first batch of 101, which MongoDB sends in batches of 16 MB)
    and the sessions a closing client ends."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in ("getMore", "killCursors", "endSessions"):
            self.sent[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("count", [3, 300])
def test_a_round_of_claims_renewals_and_releases_sends_the_same_commands_for_any_number(
    mailbox: Mailbox,
    store: Store,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> None:
    """A replica's leases move together: claiming, renewing and releasing 300 accounts takes
    the commands that 3 take (claim: read accounts, read terms, insert, prune, read back;
    renew and release: insert and prune)."""
    first = add_account(store, settings, mailbox)
    docs = store.accounts.find_one({"_id": first.id})
    assert docs is not None
    store.accounts.insert_many([{**docs, "_id": f"{first.id}-{i}"} for i in range(count - 1)])
    accounts = [Account.model_validate(d) for d in store.accounts.find({"enabled": True})]
    listener = Commands()
    monkeypatch.setattr(
        shared.store, "MongoClient", partial(MongoClient, event_listeners=[listener])
    )
    watched = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
    try:
        leases = MongoLeases(watched, "a", 30)
        listener.sent.clear()
        assert len(leases.claim_all(accounts, now=T0)) == count
        claimed, listener.sent = listener.sent, Counter()
        renewed = leases.renew_all([a.id for a in accounts], now=T0 + timedelta(seconds=10))
        assert len(renewed) == count
        renewal, listener.sent = listener.sent, Counter()
        leases.release_all([a.id for a in accounts])
        released = listener.sent
    finally:
        watched.close()
    assert claimed == Counter({"find": 3, "insert": 1, "delete": 1})
    assert renewal == Counter({"insert": 1, "delete": 1})
    assert released == Counter({"insert": 1, "delete": 1})
    holders = MongoLeases(store, "b", 30).holders([a.id for a in accounts], now=T0)
    assert set(holders.values()) == {None}
