"""One thread per held account: connect, catch up, then IDLE or poll; back off on failure.

What an account's thread shares with the replica's others (`ReplicaParts`): the RabbitMQ
connections it publishes through, the watcher that wakes it when its socket in IDLE has
something to read (the thread itself sleeps on an event meanwhile), and the login rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from fetcher.adapters import (
    BrokerEventPublisher,
    MongoAccounts,
    MongoFailedMail,
    MongoFetchFailures,
    MongoMailOutcomes,
    MongoOAuthTokens,
    MongoPop3Positions,
    MongoPositionStore,
    MongoTakenMail,
)
from fetcher.failures import MessageFailures
from fetcher.health import AccountHealth
from fetcher.idle import wait_for_mail
from fetcher.imap import ImapClientMailbox
from fetcher.logins import LoginGate
from fetcher.pop3 import PoplibMailbox
from fetcher.pop3sync import Pop3Sync
from fetcher.publishing import PublisherPool
from fetcher.settings import FetcherSettings
from fetcher.settle import Settler
from fetcher.sync import ImapSync, SyncResult
from fetcher.watcher import SocketWatcher
from shared.accounts import Account
from shared.blobs import GridFsBlobStore
from shared.crypto import SecretBox
from shared.errors import MailboxError, MailboxRejectedError, TransientError
from shared.logging import get_logger
from shared.metrics import record_fetch
from shared.oauth.endpoint import token_endpoint
from shared.oauth.tokens import AccessTokenDueError, AccessTokens
from shared.store import Store

log = get_logger("mailintake.fetcher")

M = TypeVar("M")


@dataclass(frozen=True)
class ReplicaParts:
    """What every account's thread of a replica uses together."""

    publisher: PublisherPool
    watcher: SocketWatcher
    logins: LoginGate


class _StoppedError(Exception):
    """The account was stopped while its thread waited to log in."""


class AccountRunner:
    """Fetches one account in its own thread."""

    def __init__(
        self,
        account: Account,
        *,
        settings: FetcherSettings,
        store: Store,
        box: SecretBox,
        clock: Callable[[], datetime],
        parts: ReplicaParts,
    ) -> None:
        self.account = account
        self.stop = threading.Event()
        self._wake = threading.Event()  # set with `stop`, or by the watcher (IDLE)
        self._settings = settings
        self._store = store
        self._box = box
        self._clock = clock
        self._parts = parts
        self._publisher = BrokerEventPublisher(parts.publisher)
        self._health = AccountHealth(account, MongoAccounts(store), self._publisher)
        self._tokens: AccessTokens | None = None
        self._consent_due = False
        self._settler = Settler(
            account,
            outcomes=MongoMailOutcomes(store, account.tenant_id),
            positions=MongoPositionStore(store, account.tenant_id),
            clock=clock,
        )
        self._thread = threading.Thread(target=self._main, name=f"fetch-{account.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread; True when it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        log.info("account_started", account_id=self.account.id, protocol=self.account.protocol)
        retrying = Retrying(
            retry=retry_if_exception_type((MailboxError, TransientError)),
            wait=wait_exponential(
                multiplier=self._settings.fetch_backoff_base_seconds,
                max=self._settings.fetch_backoff_max_seconds,
            ),
            stop=lambda _state: self.stop.is_set(),
            sleep=self._sleep,
            before_sleep=self._on_failure,
            reraise=True,
        )
        try:
            while not self.stop.is_set():
                retrying(self._session)  # a session that got going resets the backoff
        except _StoppedError:
            pass
        except (MailboxError, TransientError) as exc:
            log.info("account_stopped_failing", account_id=self.account.id, error=str(exc))
        except Exception:
            log.exception("account_runner_crashed", account_id=self.account.id)
        finally:
            log.info("account_stopped", account_id=self.account.id)

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # a stop cuts the backoff short

    def _on_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        a = self.account
        log.warning("account_retry", account_id=a.id, attempt=state.attempt_number, error=str(exc))
        if isinstance(exc, MailboxError):
            try:
                self._health.failed(exc, now=self._clock())
            except TransientError as err:  # the notice is published again on the next failure
                log.warning("account_state_not_saved", account_id=a.id, error=str(err))

    def _session(self) -> None:
        """One connection's life; an access token due for renewal ends it, to reconnect at once."""
        self._consent_due = self.account.auth == "oauth2"
        a = self.account
        self._settler.resume(MongoPositionStore(self._store, a.tenant_id).last_publish(a.id))
        try:
            self._connected()
        except AccessTokenDueError:
            log.info("oauth_session_renewed", account_id=self.account.id)

    def _connected(self) -> None:
        """Catch up, then wait for mail (IDLE) or for the poll interval."""
        if self.stop.is_set():
            return
        if self.account.protocol == "pop3":
            self._pop3_pass()
            self.stop.wait(self.account.poll_interval)
            return
        with ExitStack() as stack:
            watched = partial(
                ImapClientMailbox,
                watcher=self._parts.watcher,
                wake=self._wake,
                timeout=self._settings.mailbox_timeout_seconds,
                budget=self._settings.fetch_budget_bytes,
            )
            mailbox = self._open(stack, watched)
            self._imap_pass(mailbox)
            if not mailbox.supports_idle():
                stack.close()
                self.stop.wait(self.account.poll_interval)
                return
            try:
                self._watch(mailbox)
            except AccessTokenDueError:
                raise
            except (MailboxError, TransientError) as exc:
                # The connection worked: reconnect (and catch up) before calling it an incident.
                log.info("connection_lost", account_id=self.account.id, error=str(exc))
                self.stop.wait(1.0)

    def _watch(self, mailbox: ImapClientMailbox) -> None:
        """IDLE and catch up; an access token due for renewal ends the session, even idle.

        While outcomes of published mail are to come, IDLE is left now and then for a pass,
        which makes the mailbox effects of those known by then (fetcher.settle).
        """
        while not self.stop.is_set():
            renew = self._settings.idle_renew_seconds
            if mailbox.renew_by is not None:
                left = mailbox.renew_by - time.monotonic()
                if left <= 0:
                    raise AccessTokenDueError(
                        f"the access token of account {self.account.id} is due"
                    )
                renew = min(renew, left)
            wait = min(renew, self._settler.next_look() or renew)
            # The watcher wakes this thread (a stop too): no need to look every second.
            wait_for_mail(mailbox, self.stop, renew_after=wait, check_every=wait)
            if not self.stop.is_set():  # a pass, not just a look: mail that came while the
                self._imap_pass(mailbox)  # connection was out of IDLE raises no EXISTS

    def _open(self, stack: ExitStack, mailbox: Callable[..., AbstractContextManager[M]]) -> M:
        """Log in (at the replica's login rate for the server); an OAuth2 token the server
        refuses is refreshed once and tried again."""
        if not self._parts.logins.wait(self.account.host, self.stop):
            raise _StoppedError
        secret, renew_by = self._secret(fresh=False)
        try:
            return stack.enter_context(mailbox(self.account, secret, renew_by=renew_by))
        except MailboxRejectedError as exc:
            if exc.reason != "token_rejected":
                raise
            log.info("oauth_token_refused", account_id=self.account.id)
        secret, renew_by = self._secret(fresh=True)
        return stack.enter_context(mailbox(self.account, secret, renew_by=renew_by))

    def _secret(self, *, fresh: bool) -> tuple[str, float | None]:
        """The password, or a valid access token and when (monotonic) to renew it."""
        a = self.account
        if a.auth != "oauth2":
            return self._box.decrypt(a.password_enc), None
        tokens = self._access_tokens()
        token = tokens.refresh() if fresh else tokens.current()
        left = (token.renew_at - self._clock()).total_seconds()
        return token.token, time.monotonic() + left

    def _access_tokens(self) -> AccessTokens:
        if self._tokens is None:
            a = self.account
            assert a.oauth is not None  # AccountConfig requires it for auth "oauth2"
            self._tokens = AccessTokens(
                a.id,
                a.oauth.endpoints(a.protocol).scope,
                store=MongoOAuthTokens(self._store, a.tenant_id),
                box=self._box,
                endpoint=token_endpoint(a, self._box),
                clock=self._clock,
            )
        return self._tokens

    def _imap_pass(self, mailbox: ImapClientMailbox) -> None:
        a = self.account
        sync = ImapSync(
            a,
            publisher=self._publisher,
            positions=MongoPositionStore(self._store, a.tenant_id),
            taken=MongoTakenMail(self._store, a.tenant_id),
            blobs=GridFsBlobStore(self._store),
            settler=self._settler,
            clock=self._clock,
            inline_limit=self._settings.inline_body_limit,
            failures=self._failures(),
            batch=self._settings.fetch_batch,
            budget=self._settings.fetch_budget_bytes,
        )
        self._done(sync.run(mailbox))

    def _failures(self) -> MessageFailures:
        a = self.account
        return MessageFailures(
            a,
            store=MongoFetchFailures(self._store, a.tenant_id),
            archive=MongoFailedMail(self._store),
            publisher=self._publisher,
            attempts=self._settings.fetch_attempts,
            clock=self._clock,
        )

    def _pop3_pass(self) -> None:
        a = self.account
        sync = Pop3Sync(
            a,
            publisher=self._publisher,
            positions=MongoPop3Positions(self._store, a.tenant_id),
            blobs=GridFsBlobStore(self._store),
            settler=self._settler,
            clock=self._clock,
            inline_limit=self._settings.inline_body_limit,
            failures=self._failures(),
            budget=self._settings.fetch_budget_bytes,
        )
        with ExitStack() as stack:
            pop3 = partial(
                PoplibMailbox,
                timeout=self._settings.mailbox_timeout_seconds,
                budget=self._settings.fetch_budget_bytes,
            )
            result = sync.run(self._open(stack, pop3))
        self._settler.record(result.settled)  # the session's QUIT made its DELEs final
        self._done(result)

    def _done(self, result: SyncResult) -> None:
        self._health.succeeded(now=self._clock())
        if self._consent_due:
            self._check_consent()
        record_fetch(self.account.id, fetched=result.fetched)
        if result.fetched or result.duplicates:
            log.info(
                "mail_fetched",
                account_id=self.account.id,
                count=result.fetched,
                duplicates=result.duplicates,
            )

    def _check_consent(self) -> None:
        """After a session's first good pass (each token renewal starts a session): warn ahead
        of the consent's end. A failed publish or read is tried again after the next pass."""
        a = self.account
        window = timedelta(days=self._settings.oauth_consent_warning_days)
        try:
            ends = MongoOAuthTokens(self._store, a.tenant_id).consent_ends(a.id)
            self._health.consent_ends(ends, now=self._clock(), window=window)
        except TransientError as exc:
            log.warning("consent_warning_not_sent", account_id=a.id, error=str(exc))
            return
        self._consent_due = False
