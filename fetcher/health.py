"""An account's state (ok / error), its incidents and warnings: each told to its owner once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fetcher.ports import EventPublisher
from shared.accounts import Account
from shared.contracts import EVENT_NAMESPACE, AccountFailed, AccountWarning, deterministic_id
from shared.errors import MailboxError


class AccountStates(Protocol):
    """Where an account's state is kept."""

    def save_state(self, account: Account, state: dict[str, Any]) -> None: ...


def incident_id_for(account_id: str, since: datetime) -> str:
    """An incident is the account plus the moment it started failing."""
    return deterministic_id("incident", account_id, since.isoformat())


def failure_event(
    account: Account, incident_id: str, error: MailboxError, *, now: datetime
) -> AccountFailed:
    """The event that tells the owner; its id follows from the incident, so a replay repeats it."""
    return AccountFailed(
        event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"{incident_id}/{AccountFailed.event_type}")),
        tenant_id=account.tenant_id,
        account_id=account.id,
        occurred_at=now,
        owner_id=account.owner_id,
        incident_id=incident_id,
        reason=error.reason,
        message=str(error),
    )


def consent_warning_id(account: Account) -> str:
    """A consent is the account plus its authorization: a new `accounts authorize` may warn again.

    Not the end itself: each rotation recomputes it (issue time + lifetime), moving it slightly.
    """
    authorized = account.oauth_authorized_at
    return deterministic_id(
        "consent_expiring", account.id, authorized.isoformat() if authorized else ""
    )


def consent_warning(
    account: Account, ends: datetime | None, *, now: datetime, window: timedelta
) -> AccountWarning | None:
    """The warning due for an OAuth2 consent ending at `ends`: None if unknown or further off."""
    if ends is None or window <= timedelta(0) or ends - now > window:
        return None
    return AccountWarning.for_warning(
        consent_warning_id(account),
        tenant_id=account.tenant_id,
        account_id=account.id,
        occurred_at=now,
        owner_id=account.owner_id,
        reason="oauth_consent_expiring",
        message=f"the provider ends the OAuth2 consent of {account.username} "
        f"on {ends.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        expires_at=ends,
    )


class AccountHealth:
    """Turns sync outcomes into the account's state, starting from what is stored."""

    def __init__(self, account: Account, states: AccountStates, publisher: EventPublisher):
        self.account = account
        self._states = states
        self._publisher = publisher
        self.state: dict[str, Any] = dict(account.state)

    def failed(self, error: MailboxError, *, now: datetime) -> None:
        """The account is in error since the incident began; its owner is told once.

        Retries within one incident only update the reason; the notice is published until
        its publish is confirmed, and its id is the same every time (the notifier dedupes).
        """
        state = self.state
        if state.get("status") != "error" or not state.get("incident_id"):
            incident = incident_id_for(self.account.id, now)
            state = {**self._kept(), "status": "error", "since": now, "incident_id": incident}
        state = {**state, "reason": error.reason, "message": str(error), "updated_at": now}
        self._save(state)
        if state.get("notified") != state["incident_id"]:
            event = failure_event(self.account, state["incident_id"], error, now=now)
            self._publisher.publish([(event, None)])
            self._save({**state, "notified": state["incident_id"]})

    def succeeded(self, *, now: datetime) -> None:
        """A successful pass ends any incident: a later failure is a new one."""
        state = self.state
        if state.get("status") != "ok":
            state = {**self._kept(), "status": "ok", "since": now}
        self._save({**state, "last_fetch_at": now, "updated_at": now})

    def consent_ends(self, ends: datetime | None, *, now: datetime, window: timedelta) -> None:
        """An OAuth2 consent ending within `window` is told to the owner once per authorization.

        Published until its publish is confirmed, then remembered in the state, so restarts and
        other replicas do not repeat it (the notifier dedupes on the same id as well).
        """
        event = consent_warning(self.account, ends, now=now, window=window)
        if event is None or self.state.get("consent_warned") == event.warning_id:
            return
        self._publisher.publish([(event, None)])
        self._save({**self.state, "consent_warned": event.warning_id})

    def _kept(self) -> dict[str, Any]:
        """What outlives a change between ok and error: the consent warning already given."""
        return {k: v for k, v in self.state.items() if k == "consent_warned"}

    def _save(self, state: dict[str, Any]) -> None:
        self._states.save_state(self.account, state)
        self.state = state
