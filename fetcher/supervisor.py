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
from fetcher.replicas import MongoReplicas, fair_share
from fetcher.runner import AccountRunner
from fetcher.settings import FetcherSettings
from shared.accounts import Account, AccountConfig
from shared.crypto import SecretBox
from shared.errors import StoreUnavailableError
from shared.logging import get_logger
from shared.store import Store

log = get_logger("mailintake.fetcher")


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
    """An account whose lease we hold: its runner, its config and when our lease ends."""

    runner: AccountRunner
    key: str
    deadline: datetime


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

    def run(self) -> None:
        log.info("fetcher_starting", holder=self.leases.holder, lease_seconds=self.leases.seconds)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                except StoreUnavailableError as exc:
                    log.warning("store_unavailable", error=str(exc))
                self.stop.wait(max(self.interval - (time.monotonic() - started), 0.1))
        finally:
            self.shutdown()

    def tick(self) -> None:
        """Renew what is held, drop what was lost or changed, balance, claim what is free."""
        now = self._clock()
        try:
            self.replicas.beat(now)
            accounts = {a.id: a for a in self._accounts.enabled()}
            self._renew(accounts, now)
            self._balance(accounts, now)
            self.last_tick = self._clock()
        finally:
            self._expire(self._clock())

    def _renew(self, accounts: dict[str, Account], now: datetime) -> None:
        """Renew every lease first, then stop the runners that must stop, all together."""
        gone, lost, changed = [], [], []
        for account_id, held in self.runners.items():
            account = accounts.get(account_id)
            if account is None or not held.runner.alive():
                gone.append(account_id)  # disabled, removed, or its runner ended
            elif not self.leases.renew(account, now=now):
                lost.append(account_id)
            else:
                held.deadline = now + timedelta(seconds=self.leases.seconds)
                if held.key != config_key(account):
                    changed.append(account)
        self._drop(lost, release=False, why="lease_lost")
        self._drop(gone, release=True, why="account_disabled_or_runner_ended")
        for account in changed:
            deadline = self.runners[account.id].deadline
            self._drop([account.id], release=False, why="account_changed")
            self._start(account, deadline)

    def _balance(self, accounts: dict[str, Account], now: datetime) -> None:
        """Give back what exceeds our share; claim free accounts up to it."""
        share = fair_share(len(accounts), self.replicas.live(now))
        self._drop(sorted(self.runners)[share:], release=True, why="over_fair_share")
        free = [a for a in accounts.values() if a.id not in self.runners]
        terms = self.leases.current_terms(a.id for a in free)
        for account in free:
            if len(self.runners) >= share:
                break
            term = terms.get(account.id)
            if term is not None and not term.free(now):
                continue
            claimed = self.leases.claim(account, now=now)
            if claimed is not None:
                self._start(claimed, now + timedelta(seconds=self.leases.seconds))

    def _expire(self, now: datetime) -> None:
        """Stop a runner whose lease would end before the next renewal: it may be taken over."""
        margin = timedelta(seconds=self.interval * 1.5)
        ending = [i for i, held in self.runners.items() if held.deadline - now < margin]
        self._drop(ending, release=False, why="lease_not_renewed")

    def _start(self, account: Account, deadline: datetime) -> None:
        assert self._box is not None
        runner = AccountRunner(
            account, settings=self._settings, store=self._store, box=self._box, clock=self._clock
        )
        self.runners[account.id] = Held(runner, config_key(account), deadline)
        runner.start()

    def _drop(self, account_ids: list[str], *, release: bool, why: str) -> None:
        """Stop these runners together; give a lease back only once its runner has ended."""
        dropped = [self.runners.pop(i).runner for i in account_ids]
        for runner in dropped:
            log.info("account_dropped", account_id=runner.account.id, reason=why)
            runner.request_stop()
        deadline = time.monotonic() + 10
        for runner in dropped:
            if not runner.join(timeout=max(deadline - time.monotonic(), 0.1)):
                log.warning("account_runner_not_stopped", account_id=runner.account.id)
            elif release:
                try:
                    self.leases.release(runner.account)
                except StoreUnavailableError as exc:  # it lapses at the end of its term instead
                    log.warning("lease_not_released", account_id=runner.account.id, error=str(exc))

    def shutdown(self) -> None:
        """Stop every runner and release its lease at once."""
        held = len(self.runners)
        self._drop(list(self.runners), release=True, why="shutdown")
        try:
            self.replicas.leave()
        except StoreUnavailableError as exc:
            log.warning("heartbeat_not_removed", error=str(exc))
        log.info("fetcher_stopped", holder=self.leases.holder, held=held)
