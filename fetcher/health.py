"""An account's state (ok / error) and its incidents: one AccountFailed per incident."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from fetcher.ports import EventPublisher
from shared.accounts import Account
from shared.contracts import EVENT_NAMESPACE, AccountFailed, deterministic_id
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
            state = {"status": "error", "since": now, "incident_id": incident}
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
            state = {"status": "ok", "since": now}
        self._save({**state, "last_fetch_at": now, "updated_at": now})

    def _save(self, state: dict[str, Any]) -> None:
        self._states.save_state(self.account, state)
        self.state = state
