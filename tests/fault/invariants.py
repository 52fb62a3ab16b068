"""What every fault must leave true: one record per mail, the rules' notifications, even shares."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from shared.errors import BrokerUnavailableError
from shared.mailboxref import OUTCOMES
from tests.fault.conftest import (
    DELETING_ACCOUNT,
    GROUP_MANAGERS,
    TENANT,
    Planned,
    Stream,
    World,
)
from tests.services import collection_size

TOKEN = re.compile(r"\bm\d{5}\b")
OUTCOME = {
    "tag": ("bound", "subject_tag"),
    "known": ("bound", "sender"),
    "new": ("bound", "created"),
    "skip": ("skipped", None),
}
FINISHING = ("incoming_email", "message_skipped")


@dataclass
class Verdict:
    """Mails lost, effects duplicated, and a line for each broken invariant."""

    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)

    def missing(self, what: str) -> None:
        self.lost += 1
        self.problems.append(f"missing: {what}")

    def extra(self, count: int, what: str) -> None:
        self.duplicated += count
        self.problems.append(f"{count} extra: {what}")


def expected_notifications(mail: Planned, manager: str | None) -> list[tuple[str, str | None]]:
    """(kind, recipient) in the rules' order; `manager` is who got a created customer."""
    if mail.kind == "new":
        return [("customer_assigned", manager), ("incoming_email", manager)]
    if mail.kind == "skip":
        return [("message_skipped", mail.recipient)]
    return [("incoming_email", mail.recipient)]


def done_mails(world: World) -> int:
    """Mails whose last notification exists (they are through the whole pipeline)."""
    query = {"tenant_id": TENANT, "kind": {"$in": list(FINISHING)}}
    return world.store.notifications.count_documents(query)


def recorded(world: World) -> int:
    """Documents in `emails` (the scenario's own database holds only its tenant's)."""
    return collection_size(world.store.emails)


def ready(world: World, queue: str) -> int:
    """Messages ready in `queue`; reconnects once if a broker restart dropped the connection."""
    try:
        return world.broker.queue_counts(queue)[0]
    except BrokerUnavailableError:
        return world.broker.queue_counts(queue)[0]


def dead_letters(world: World) -> dict[str, int]:
    queues = [q for q in world.broker.topology.all_queues() if q.endswith(".dlq")]
    counts = {q: ready(world, q) for q in queues}
    return {q: n for q, n in counts.items() if n}


def settled(world: World) -> bool:
    """Everything arrived and the queues are idle, or something was dead-lettered."""
    if dead_letters(world):
        return True
    stream = world.stream
    if recorded(world) < len(stream.mails):  # cheap: scans below only once all are bound
        return False
    if done_mails(world) < len(stream.mails):
        return False
    if world.store.emails.count_documents({"tenant_id": TENANT}) < len(stream.mails):
        return False
    queues = [q for q in world.broker.topology.all_queues() if not q.endswith(".dlq")]
    if not all(ready(world, q) == 0 for q in queues):
        return False
    return world.store[OUTCOMES].count_documents({"tenant_id": TENANT}) == 0  # all made


def check(world: World) -> Verdict:
    """Every invariant of the fault suite, on the store, the queues and the mailboxes."""
    verdict = Verdict()
    emails = _emails_by_token(world, verdict)
    _check_emails(world.stream, emails, verdict)
    managers = _check_customers(world, verdict)
    _check_notifications(world, emails, managers, verdict)
    _check_evenness(world.stream, managers, verdict)
    for queue, count in dead_letters(world).items():
        verdict.problems.append(f"{count} message(s) in {queue}")
    _check_mailboxes(world, verdict)
    return verdict


def _emails_by_token(world: World, verdict: Verdict) -> dict[str, dict[str, Any]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in world.store.emails.find({"tenant_id": TENANT}):
        match = TOKEN.search(doc.get("subject") or "")
        found[match.group(0) if match else "?"].append(doc)
    for token, docs in found.items():
        if len(docs) > 1:
            verdict.extra(len(docs) - 1, f"emails documents of {token}")
    return {token: docs[0] for token, docs in found.items()}


def _check_emails(stream: Stream, emails: dict[str, dict[str, Any]], verdict: Verdict) -> None:
    for mail in stream.mails:
        doc = emails.get(mail.token)
        if doc is None:
            verdict.missing(f"the emails document of {mail.token} ({mail.kind})")
        elif (doc.get("status"), doc.get("matched_by")) != OUTCOME[mail.kind]:
            got = (doc.get("status"), doc.get("matched_by"), doc.get("skip_reason"))
            verdict.problems.append(f"{mail.token} ({mail.kind}) ended as {got}")


def _check_customers(world: World, verdict: Verdict) -> dict[str, str | None]:
    """Exactly one customer per new sender; the manager each of them got."""
    made = list(world.store.customers.find({"tenant_id": TENANT, "source": "mail"}))
    per_address = Counter(a for c in made for a in c["emails"])
    managers: dict[str, str | None] = {}
    for mail in world.stream.of_kind("new"):
        if per_address[mail.sender] == 0:
            verdict.missing(f"the customer of {mail.sender}")
        for c in made:
            if mail.sender in c["emails"]:
                managers[mail.sender] = c.get("manager_id")
    senders = {m.sender for m in world.stream.of_kind("new")}
    surplus = sum(n - 1 if a in senders else n for a, n in per_address.items() if n)
    if surplus:
        verdict.extra(surplus, "customers created from mail")
    return managers


def _check_notifications(
    world: World,
    emails: dict[str, dict[str, Any]],
    managers: dict[str, str | None],
    verdict: Verdict,
) -> None:
    by_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in world.store.notifications.find({"tenant_id": TENANT}).sort("created_at", 1):
        by_email[str(n.get("email_id"))].append(n)
    expected_total = 0
    for mail in world.stream.mails:
        doc = emails.get(mail.token)
        manager = managers.get(mail.sender) if mail.kind == "new" else None
        want = expected_notifications(mail, manager)
        expected_total += len(want)
        got = [(n["kind"], n["user_id"]) for n in by_email.pop(doc["_id"], [])] if doc else []
        _compare(mail, want, got, verdict)
    leftover = sum(len(v) for v in by_email.values())
    if leftover:
        verdict.extra(leftover, "notifications of no mail of the stream")


def _compare(
    mail: Planned,
    want: list[tuple[str, str | None]],
    got: list[tuple[str, Any]],
    verdict: Verdict,
) -> None:
    """`got` is in created_at order, so equal lists also mean customer_assigned came first."""
    if got == want:
        return
    if mail.kind == "new" and None in [who for _k, who in want]:
        verdict.problems.append(f"{mail.token}: its new customer has no manager")
    absent = [item for item in want if item not in got]
    for item in absent:
        verdict.missing(f"notification {item} of {mail.token}")
    extra = len(got) - (len(want) - len(absent))
    if extra > 0:
        verdict.extra(extra, f"notifications of {mail.token}: {got}")
    if sorted(got) == sorted(want):
        verdict.problems.append(f"{mail.token}: notifications out of order: {got}")


def _check_evenness(stream: Stream, managers: dict[str, str | None], verdict: Verdict) -> None:
    """N new customers over k free managers: each gets N/k ± 1."""
    shares = Counter(m for m in managers.values() if m is not None)
    fair = len(stream.of_kind("new")) / len(GROUP_MANAGERS)
    uneven = {m: shares[m] for m in GROUP_MANAGERS if abs(shares[m] - fair) > 1}
    if uneven or set(shares) - set(GROUP_MANAGERS):
        verdict.problems.append(f"uneven assignment: {dict(shares)} (fair {fair:.1f})")


def expected_on_server(mail: Planned) -> str:
    """What the mailbox holds of a mail once its outcome is settled: loaded mail is read, or
    gone where the account deletes loaded messages; skipped mail is left unread."""
    if mail.kind == "skip":
        return "unread"
    return "gone" if mail.account == DELETING_ACCOUNT else "read"


def on_server(flags: dict[str, str], mail: Planned) -> str:
    if mail.subject not in flags:
        return "gone"
    return "read" if "\\Seen" in flags[mail.subject] else "unread"


def _check_mailboxes(world: World, verdict: Verdict) -> None:
    for index, mailbox in enumerate(world.mailboxes):
        flags = mailbox.flags_by_subject()
        wrong: Counter[str] = Counter()
        for mail in (m for m in world.stream.mails if m.account == index):
            want, got = expected_on_server(mail), on_server(flags, mail)
            if want != got:
                wrong[f"{mail.kind} {got}, not {want}"] += 1
        for what, count in sorted(wrong.items()):
            verdict.problems.append(f"mailbox {index}: {count} mails {what}")
            if what.startswith("skip gone"):
                verdict.lost += count  # a skipped mail deleted from the server is lost
