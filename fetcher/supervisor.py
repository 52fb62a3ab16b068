"""The fetcher's main loop: claim account leases, run one thread per held account, let go."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import datetime

from fetcher.adapters import MongoAccounts
from fetcher.leases import MongoLeases, holder_id
from fetcher.runner import AccountRunner
from fetcher.settings import FetcherSettings
from shared.accounts import Account, AccountConfig
from shared.crypto import SecretBox
from shared.errors import StoreUnavailableError
from shared.logging import get_logger
from shared.store import Store

log = get_logger("mailintake.fetcher")

RunnerFactory = Callable[[Account], AccountRunner]


def config_key(account: Account) -> str:
    """What a runner depends on: a change of it (or of the password) restarts the runner."""
    fields = {k: getattr(account, k) for k in AccountConfig.model_fields}
    fields["password_enc"] = account.password_enc
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


class Supervisor:
    """Holds leases on accounts and runs an AccountRunner for each one held.

    Leases are renewed every third of their period; a lease that cannot be renewed (taken
    over, or the account disabled) stops its runner. On stop, every lease is released at once.
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
        self.leases = MongoLeases(store, holder or holder_id(), settings.lease_seconds)
        self.stop = stop
        self._settings = settings
        self._store = store
        self._clock = clock
        self._accounts = MongoAccounts(store)
        key = settings.secret_key
        self._box = SecretBox(key.get_secret_value()) if key is not None else None
        self.runners: dict[str, tuple[AccountRunner, str]] = {}

    def run(self) -> None:
        log.info("fetcher_starting", holder=self.leases.holder, lease_seconds=self.leases.seconds)
        try:
            while not self.stop.is_set():
                try:
                    self.tick()
                except StoreUnavailableError as exc:
                    log.warning("store_unavailable", error=str(exc))
                self.stop.wait(self.leases.seconds / 3)
        finally:
            self.shutdown()

    def tick(self) -> None:
        """Renew what is held, drop what was lost or changed, claim what is free."""
        now = self._clock()
        for account_id, (runner, _key) in list(self.runners.items()):
            if not runner.alive() or not self.leases.renew(runner.account, now=now):
                log.info("lease_lost", account_id=account_id, alive=runner.alive())
                self._drop(account_id, release=runner.alive() is False)
        for account in self._accounts.enabled():
            held = self.runners.get(account.id)
            if held is not None and held[1] != config_key(account):
                log.info("account_changed", account_id=account.id)
                self._drop(account.id, release=False)
                held = None
            if held is None:
                claimed = self.leases.claim(account, now=now)
                if claimed is not None:
                    self._start(claimed)

    def _start(self, account: Account) -> None:
        assert self._box is not None
        runner = AccountRunner(
            account, settings=self._settings, store=self._store, box=self._box, clock=self._clock
        )
        self.runners[account.id] = (runner, config_key(account))
        runner.start()

    def _drop(self, account_id: str, *, release: bool) -> None:
        runner, _key = self.runners.pop(account_id)
        runner.request_stop()
        runner.join(timeout=10)
        if release:
            self.leases.release(runner.account)

    def shutdown(self) -> None:
        """Stop every runner and release its lease at once."""
        runners = [r for r, _k in self.runners.values()]
        self.runners.clear()
        for runner in runners:
            runner.request_stop()
        for runner in runners:
            runner.join(timeout=10)
            try:
                self.leases.release(runner.account)
            except StoreUnavailableError as exc:
                log.warning("lease_not_released", account_id=runner.account.id, error=str(exc))
        log.info("fetcher_stopped", holder=self.leases.holder, released=len(runners))
