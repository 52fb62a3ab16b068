"""The fetcher's main loop: claim a fair share of the leases, run one thread per held account."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fetcher.adapters import MongoAccounts
from fetcher.leases import MongoLeases, holder_id
from fetcher.logins import LoginGate
from fetcher.publishing import PublisherPool
from fetcher.replicas import MongoReplicas, fair_share
from fetcher.runner import AccountRunner, ReplicaParts
from fetcher.settings import FetcherSettings
from fetcher.watcher import SocketWatcher
from shared.accounts import Account, AccountConfig
from shared.crypto import SecretBox
from shared.errors import StoreUnavailableError
from shared.logging import get_logger
from shared.metrics import FETCHER_HELD, FETCHER_IDLE
from shared.runtime import open_broker
from shared.store import Store

log = get_logger("mailintake.fetcher")

CLAIM_SPARE = 16  # accounts tried beyond those missing, in one round of claims
STOP_WARNING = 10.0  # seconds a runner asked to stop may take before it is reported


def config_key(account: Account) -> str:
    """What a runner depends on: a change of it (or of the password) restarts the runner.

    For OAuth2 a new authorization or client secret counts; a rotated refresh token does not.
    """
    fields = {k: getattr(account, k) for k in AccountConfig.model_fields}
    fields["password_enc"] = account.password_enc
    fields["oauth_client_secret_enc"] = account.oauth_client_secret_enc
    fields["oauth_authorized_at"] = account.oauth_authorized_at
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Held:
    """An account whose lease we hold: its runner, its config's key, when our lease ends."""

    runner: AccountRunner
    key: str
    deadline: datetime
    account: Account  # as last read (the same object while its document is unchanged)


class Supervisor:
    """Holds leases on a fair share of the accounts and runs an AccountRunner for each.

    Every third of a lease period: beat the heartbeat, renew what is held, stop what was
    lost, disabled or changed, give back what exceeds ceil(accounts / live replicas), and
    claim free accounts up to that share. A runner whose lease could not be renewed stops
    before the lease ends. On stop, every lease is released at once.
    """

    def __init__(
        self,
        settings: FetcherSettings,
        store: Store,
        stop: threading.Event,
        *,
        clock: Callable[[], datetime],
        holder: str | None = None,
    ) -> None:
        holder = holder or holder_id()
        self.leases = MongoLeases(store, holder, settings.lease_seconds)
        self.replicas = MongoReplicas(store, holder, settings.lease_seconds)
        self.stop = stop
        self.interval = settings.lease_seconds / 3
        self.last_tick: datetime | None = None  # end of the last tick that reached the store
        self._settings = settings
        self._store = store
        self._clock = clock
        self._accounts = MongoAccounts(store)
        key = settings.secret_key
        self._box = SecretBox(key.get_secret_value()) if key is not None else None
        self.runners: dict[str, Held] = {}
        # Runners asked to stop and not yet ended: whether to give their lease back once they
        # have, and since when (monotonic). A lease round never waits for them.
        self.stopping: dict[str, tuple[AccountRunner, bool, float]] = {}
        brokers = [open_broker(settings, "fetcher") for _ in range(settings.amqp_connections)]
        self.parts = ReplicaParts(
            PublisherPool(brokers), SocketWatcher(), LoginGate(settings.login_rate)
        )
        FETCHER_HELD.set_function(lambda: len(self.runners))
        FETCHER_IDLE.set_function(self.parts.watcher.watching)

    def run(self) -> None:
        log.info("fetcher_starting", holder=self.leases.holder, lease_seconds=self.leases.seconds)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                except StoreUnavailableError as exc:
                    log.warning("store_unavailable", error=str(exc))
                took = time.monotonic() - started
                if took > self.interval / 2:  # at a whole interval, leases start to lapse
                    log.warning("lease_round_slow", seconds=round(took, 1), held=len(self.runners))
                self.stop.wait(max(self.interval - took, 0.1))
        finally:
            self.shutdown()

    def tick(self) -> None:
        """Renew what is held, drop what was lost or changed, balance, claim what is free."""
        try:
            self._reap()
            self.replicas.beat(self._clock())
            accounts = {a.id: a for a in self._accounts.enabled()}
            self._renew(accounts, self._clock())  # a term runs from when it is written
            self._balance(accounts, self._clock())
            self.last_tick = self._clock()
        finally:
            self._expire(self._clock())

    def _renew(self, accounts: dict[str, Account], now: datetime) -> None:
        """Renew every lease first (one round for all), then stop the runners that must stop."""
        gone = [
            i for i, held in self.runners.items() if i not in accounts or not held.runner.alive()
        ]  # disabled, removed, or its runner ended
        keep = [i for i in self.runners if i not in gone]
        renewed = self.leases.renew_all(keep, now=now)
        lost, changed = [i for i in keep if i not in renewed], []
        for account_id in renewed:
            held, account = self.runners[account_id], accounts[account_id]
            held.deadline = now + timedelta(seconds=self.leases.seconds)
            if account is not held.account:  # read anew: did what the runner uses change?
                if held.key != config_key(account):
                    changed.append(account)
                held.account = account
        self._drop(lost, release=False, why="lease_lost")
        self._drop(gone, release=True, why="account_disabled_or_runner_ended")
        # Started again with the new config by a later round, once this runner has ended
        # (the lease stays ours meanwhile: a claim takes back a lease its holder still has).
        self._drop([a.id for a in changed], release=False, why="account_changed")

    def _balance(self, accounts: dict[str, Account], now: datetime) -> None:
        """Give back what exceeds our share; claim free accounts up to it.

        Free accounts are tried in an order of this replica's own (so that replicas starting
        together mostly try different ones), a few more than are missing at a time. A round
        claims no more than the replica can log in to before the next one (its login rate):
        a replica starting beside thousands of free accounts takes them over a few rounds, each
        short enough to renew what it holds in time."""
        share = fair_share(len(accounts), self.replicas.live(now))
        self._drop(sorted(self.runners)[share:], release=True, why="over_fair_share")
        holder = self.leases.holder
        free = sorted(
            (
                a
                for a in accounts.values()
                if a.id not in self.runners and a.id not in self.stopping
            ),
            key=lambda a: hashlib.sha256(f"{holder}:{a.id}".encode()).digest(),
        )
        allowed = max(1, int(self._settings.login_rate * self.interval))
        while free and len(self.runners) < share and allowed > 0:
            need = min(share - len(self.runners), allowed)
            tried, free = free[: need * 2 + CLAIM_SPARE], free[need * 2 + CLAIM_SPARE :]
            now = self._clock()
            won = self.leases.claim_all(tried, now=now)
            for claimed in won[:need]:
                self._start(claimed, now + timedelta(seconds=self.leases.seconds))
                allowed -= 1
            if len(won) > need:  # more were free than missing: give the rest back at once
                self.leases.release_all(a.id for a in won[need:])

    def _expire(self, now: datetime) -> None:
        """Stop a runner whose lease would end before the next renewal: it may be taken over."""
        margin = timedelta(seconds=self.interval * 1.5)
        ending = [i for i, held in self.runners.items() if held.deadline - now < margin]
        self._drop(ending, release=False, why="lease_not_renewed")

    def _start(self, account: Account, deadline: datetime) -> None:
        assert self._box is not None
        runner = AccountRunner(
            account,
            settings=self._settings,
            store=self._store,
            box=self._box,
            clock=self._clock,
            parts=self.parts,
        )
        self.runners[account.id] = Held(runner, config_key(account), deadline, account)
        runner.start()

    def _drop(self, account_ids: list[str], *, release: bool, why: str) -> None:
        """Ask these runners to stop; a lease is given back once its runner has ended."""
        for account_id in account_ids:
            runner = self.runners.pop(account_id).runner
            log.info("account_dropped", account_id=account_id, reason=why)
            runner.request_stop()
            self.stopping[account_id] = (runner, release, time.monotonic())

    def _reap(self) -> None:
        """Give back the leases of the runners that have ended since; warn of one that is
        still running STOP_WARNING seconds after it was asked to stop (once)."""
        ended = [i for i, (runner, _r, _t) in self.stopping.items() if not runner.alive()]
        release = [i for i in ended if self.stopping[i][1]]
        for account_id in ended:
            del self.stopping[account_id]
        late = time.monotonic() - STOP_WARNING
        for account_id, (runner, give_back, since) in list(self.stopping.items()):
            if since < late:
                log.warning("account_runner_not_stopped", account_id=account_id)
                self.stopping[account_id] = (runner, give_back, float("inf"))
        if release:
            try:
                self.leases.release_all(release)
            except StoreUnavailableError as exc:  # they lapse at the end of their terms instead
                log.warning("leases_not_released", count=len(release), error=str(exc))

    def shutdown(self) -> None:
        """Stop every runner and release its lease at once."""
        held = len(self.runners)
        self._drop(list(self.runners), release=True, why="shutdown")
        deadline = time.monotonic() + STOP_WARNING
        for runner, _release, _since in list(self.stopping.values()):
            runner.join(timeout=max(deadline - time.monotonic(), 0.0))
        self._reap()
        self.parts.publisher.close()
        try:
            self.replicas.leave()
        except StoreUnavailableError as exc:
            log.warning("heartbeat_not_removed", error=str(exc))
        log.info("fetcher_stopped", holder=self.leases.holder, held=held)
