"""In-memory fakes of mailintake's own ports, for unit tests of the handlers."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from assigner.ports import Assignment, StoredBinding, unusable_group
from assigner.rules import Manager, next_manager
from binder.adapters import customer_id_for
from binder.ports import AccountRef, CustomerRef, OrderRef
from notifier.ports import DeliveryResult, Party, WebhookConfig
from shared.contracts import AccountOptions, Event, MailBound, MailFetched
from shared.errors import PermanentError
from shared.mail import MailParseError, ParsedMail


@dataclass
class FakeCrmDirectory:
    orders: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, set[str]] = field(default_factory=dict)  # tenant -> own addresses

    def own_addresses(self, tenant_id: str) -> frozenset[str]:
        return frozenset(self.accounts.get(tenant_id, ()))

    def add_order(
        self, tenant: str, oid: str, number: str, customer_id: str, manager_id: str | None = None
    ) -> None:
        self.orders[(tenant, number)] = {
            "_id": oid,
            "tenant_id": tenant,
            "number": number,
            "customer_id": customer_id,
            "manager_id": manager_id,
        }

    def add_customer(
        self, tenant: str, cid: str, *emails: str, manager_id: str | None = None
    ) -> None:
        self.customers[cid] = {
            "_id": cid,
            "tenant_id": tenant,
            "emails": list(emails),
            "manager_id": manager_id,
        }

    def find_order(self, tenant_id: str, number: str) -> OrderRef | None:
        o = self.orders.get((tenant_id, number))
        return OrderRef(o["_id"], o["customer_id"], o["manager_id"]) if o else None

    def find_order_by_id(self, tenant_id: str, order_id: str) -> OrderRef | None:
        for o in self.orders.values():
            if o["tenant_id"] == tenant_id and o["_id"] == order_id:
                return OrderRef(o["_id"], o["customer_id"], o["manager_id"])
        return None

    def find_customer(self, tenant_id: str, address: str) -> CustomerRef | None:
        for c in sorted(self.customers.values(), key=lambda c: c["_id"]):
            if c["tenant_id"] == tenant_id and address in c["emails"]:
                return CustomerRef(c["_id"], c["manager_id"], c.get("source_email_id"))
        return None

    def create_customer(
        self, tenant_id: str, address: str, *, shop_id: str | None, email_id: str, now: datetime
    ) -> CustomerRef:
        cid = customer_id_for(tenant_id, address)
        self.customers.setdefault(
            cid,
            {
                "_id": cid,
                "tenant_id": tenant_id,
                "emails": [address],
                "manager_id": None,
                "shop_id": shop_id,
                "source": "mail",
                "source_email_id": email_id,
            },
        )
        c = self.customers[cid]
        return CustomerRef(cid, c["manager_id"], c["source_email_id"])


@dataclass
class FakeDeadLetterRecorder:
    """Records what it is given; tells `told` each time, or raises when `broken`."""

    told: list[Event] = field(default_factory=list)
    broken: bool = False
    recorded: list[tuple[Event, str]] = field(default_factory=list)

    def record(self, event: Event, reason: str) -> list[Event]:
        if self.broken:
            raise ConnectionError("the store went away")
        self.recorded.append((event, reason))
        return list(self.told)


@dataclass
class FakeAccountDirectory:
    accounts: dict[str, AccountRef] = field(default_factory=dict)

    @classmethod
    def holding(cls, *events: MailFetched) -> FakeAccountDirectory:
        """The accounts that `events` name, stored in their tenants with their options."""
        return cls({e.account_id: AccountRef(e.account_id, e.tenant_id, e.options) for e in events})

    def find(self, tenant_id: str, account_id: str) -> AccountRef | None:
        account = self.accounts.get(account_id)
        return account if account and account.tenant_id == tenant_id else None


@dataclass
class FakeEmailArchive:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # for the fetcher

    def get(self, tenant_id: str, email_id: str) -> dict[str, Any] | None:
        d = self.docs.get(email_id)
        return d if d and d["tenant_id"] == tenant_id else None

    def record(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self.docs.setdefault(doc["_id"], doc)

    def record_outcome(self, outcome: dict[str, Any]) -> None:
        self.outcomes.setdefault(outcome["_id"], outcome)

    def replace_failed(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.docs[doc["_id"]]["status"] == "failed":
            self.docs[doc["_id"]] = doc
        return self.docs[doc["_id"]]

    def record_failure(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        stored = self.docs.setdefault(doc["_id"], doc)
        if stored["tenant_id"] != doc["tenant_id"]:
            return None
        if stored["status"] == "failed":
            self.docs[doc["_id"]] = doc
        return self.docs[doc["_id"]]

    def order_of_thread(self, tenant_id: str, message_ids: tuple[str, ...]) -> str | None:
        for d in self.docs.values():
            if (
                d["tenant_id"] == tenant_id
                and d.get("message_id") in message_ids
                and d.get("order_id")
            ):
                return str(d["order_id"])
        return None


@dataclass
class FakeBlobStore:
    blobs: dict[str, bytes] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # key -> tenant
    content_types: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str:
        if key not in self.blobs:
            self.blobs[key], self.owners[key] = data, tenant_id
            self.content_types[key] = content_type
        return key

    def get(self, ref: str) -> bytes:
        return self.blobs[ref]

    def get_own(self, tenant_id: str, ref: str) -> bytes:
        if self.owners.get(ref) != tenant_id:
            raise KeyError(ref)
        return self.blobs[ref]

    def delete_own(self, tenant_id: str, ref: str) -> None:
        if self.owners.get(ref) == tenant_id:
            del self.blobs[ref], self.owners[ref], self.content_types[ref]


@dataclass
class FakeManagerRotation:
    """The assigner's rule over an in-memory group, exactly once per customer."""

    managers: dict[str, list[Manager]] = field(default_factory=dict)
    assigned: dict[str, str] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    def assign(
        self, tenant_id: str, group_id: str, customer_id: str, *, email_id: str, now: datetime
    ) -> Assignment:
        if customer_id in self.assigned:
            return Assignment(self.assigned[customer_id])
        if group_id not in self.managers:
            return unusable_group(group_id, missing=True)
        manager = next_manager(self.managers[group_id], self.last)
        if manager is None:
            return unusable_group(group_id, missing=False)
        self.last[manager] = len(self.assigned) + 1
        self.assigned[customer_id] = manager
        return Assignment(manager)


@dataclass
class FakeNotificationInbox:
    docs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, doc: dict[str, Any]) -> bool:
        if any(d["_id"] == doc["_id"] for d in self.docs):
            return False
        self.docs.append(doc)
        return True

    def get(self, tenant_id: str, notification_id: str) -> dict[str, Any] | None:
        for d in self.docs:
            if d["_id"] == notification_id and d["tenant_id"] == tenant_id:
                return d
        return None

    def set_webhook_state(
        self, tenant_id: str, notification_id: str, state: dict[str, Any]
    ) -> None:
        doc = self.get(tenant_id, notification_id)
        if doc is not None:
            doc["webhook"] = dict(state)


@dataclass
class FakeAssignmentRecords:
    """The `emails` outcome per e-mail, and the customers' current managers."""

    outcomes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    managers: dict[str, str] = field(default_factory=dict)

    def record(
        self, tenant_id: str, email_id: str, *, manager_id: str | None, note: str | None
    ) -> None:
        self.outcomes[email_id] = (manager_id, note)

    def manager_of(self, tenant_id: str, customer_id: str) -> str | None:
        return self.managers.get(customer_id)


@dataclass
class FakeBoundMailDirectory:
    """The tenants' e-mails (their bindings), accounts and customers, keyed by (tenant, _id)."""

    bindings: dict[tuple[str, str], StoredBinding] = field(default_factory=dict)
    accounts: dict[tuple[str, str], AccountOptions] = field(default_factory=dict)
    customers: set[tuple[str, str]] = field(default_factory=set)

    def store(self, *events: MailBound) -> None:
        """Store what `events` name as they name it, where nothing is stored yet."""
        for e in events:
            binding = StoredBinding(
                e.account_id, "bound", e.matched_by, e.customer_id, e.order_id, e.manager_id
            )
            self.bindings.setdefault((e.tenant_id, e.email_id), binding)
            self.accounts.setdefault((e.tenant_id, e.account_id), e.options)
            self.customers.add((e.tenant_id, e.customer_id))

    def binding(self, tenant_id: str, email_id: str) -> StoredBinding | None:
        return self.bindings.get((tenant_id, email_id))

    def account(self, tenant_id: str, account_id: str) -> AccountOptions | None:
        return self.accounts.get((tenant_id, account_id))

    def has_customer(self, tenant_id: str, customer_id: str) -> bool:
        return (tenant_id, customer_id) in self.customers


@dataclass
class FakeRecipientDirectory:
    """The tenants' accounts, customers and orders, keyed by (tenant, _id)."""

    accounts: dict[tuple[str, str], AccountOptions] = field(default_factory=dict)
    customers: dict[tuple[str, str], Party] = field(default_factory=dict)
    orders: dict[tuple[str, str], Party] = field(default_factory=dict)

    def account(self, tenant_id: str, account_id: str) -> AccountOptions | None:
        return self.accounts.get((tenant_id, account_id))

    def customer(self, tenant_id: str, customer_id: str) -> Party | None:
        return self.customers.get((tenant_id, customer_id))

    def order(self, tenant_id: str, order_id: str) -> Party | None:
        return self.orders.get((tenant_id, order_id))


@dataclass
class FakeWebhookDirectory:
    configs: dict[str, WebhookConfig] = field(default_factory=dict)

    def enabled(self, tenant_id: str) -> bool:
        return tenant_id in self.configs

    def config(self, tenant_id: str) -> WebhookConfig | None:
        return self.configs.get(tenant_id)


@dataclass
class FakeWebhookSender:
    """Answers with the queued results in turn (then success); records every request."""

    results: list[DeliveryResult] = field(default_factory=list)
    sent: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> DeliveryResult:
        self.sent.append((url, body, headers))
        return self.results.pop(0) if self.results else DeliveryResult(True, 200)


@dataclass
class FakeUnitOfWork:
    """A batch as one unit of work over in-memory fakes (`ports`): what they write shows at
    once; a commit that fails (`fail_commit`, or a batch holding an event of `poison`) puts
    them back as they were when the batch began, as if nothing of it had been stored."""

    begun: list[list[Event]] = field(default_factory=list)
    commits: int = 0
    fail_commit: Exception | None = None
    fail_begin: Exception | None = None
    poison: frozenset[str] = frozenset()  # event ids whose writes the store refuses
    poison_error: type[Exception] = PermanentError
    _saved: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def ports(self) -> list[Any]:
        return []

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        self.begun.append([event for event, _ in batch])
        self._saved = [copy.deepcopy(vars(port)) for port in self.ports()]
        if self.fail_begin is not None:
            raise self.fail_begin

    def commit(self) -> None:
        refused = sorted(self.poison & {e.event_id for e in self.begun[-1]})
        failure = self.poison_error(f"cannot store {refused}") if refused else self.fail_commit
        if failure is not None:
            for port, saved in zip(self.ports(), self._saved, strict=True):
                vars(port).update(saved)
            raise failure
        self.commits += 1


@dataclass
class FakeBindingBatch(FakeUnitOfWork):
    """The binder's unit of work over the fakes of its ports; no mail is parsed ahead. Unless
    told otherwise (`store_named_accounts`), the accounts the events name are stored (in
    `accounts`) as the events say."""

    accounts: FakeAccountDirectory = field(default_factory=FakeAccountDirectory)
    store_named_accounts: bool = True
    crm: FakeCrmDirectory = field(default_factory=FakeCrmDirectory)
    archive: FakeEmailArchive = field(default_factory=FakeEmailArchive)
    blobs: FakeBlobStore = field(default_factory=FakeBlobStore)

    def ports(self) -> list[Any]:
        return [self.crm, self.archive, self.blobs]

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        if self.store_named_accounts:
            fetched = [e for e, _ in batch if isinstance(e, MailFetched)]
            named = FakeAccountDirectory.holding(*fetched).accounts
            self.accounts.accounts = {**named, **self.accounts.accounts}
        super().begin(batch)

    def parsed(self, email_id: str) -> ParsedMail | MailParseError | None:
        return None


@dataclass
class FakeAssignmentBatch(FakeUnitOfWork):
    """The assigner's unit of work; the rotation's turns are stored at once (as its claims
    are), so a failed commit puts back only the outcomes. Unless told otherwise
    (`store_named`), what the events name is stored (in `bindings`) as they name it."""

    bindings: FakeBoundMailDirectory = field(default_factory=FakeBoundMailDirectory)
    store_named: bool = True
    rotation: FakeManagerRotation = field(default_factory=FakeManagerRotation)
    records: FakeAssignmentRecords = field(default_factory=FakeAssignmentRecords)

    def ports(self) -> list[Any]:
        return [self.records]

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        if self.store_named:
            self.bindings.store(*(e for e, _ in batch if isinstance(e, MailBound)))
        super().begin(batch)


@dataclass
class FakeNotificationBatch(FakeUnitOfWork):
    """The notifier's unit of work over a fake inbox and a fake store of recipients."""

    inbox: FakeNotificationInbox = field(default_factory=FakeNotificationInbox)
    recipients: FakeRecipientDirectory = field(default_factory=FakeRecipientDirectory)

    def ports(self) -> list[Any]:
        return [self.inbox]
