"""Hundreds of mailboxes on two fetcher replicas: a fair split, one replica killed (-9) while
mail arrives, the survivor taking every account over, and every mail published once.

"Once" is counted by e-mail id, as the store sees it. A replica killed between a batch's
confirmed publish and the saving of its position cannot tell anybody: the account's next
holder reads that batch again and publishes it again, under the same deterministic e-mail
id (account, folder, UIDVALIDITY, UID) and event id, which the binder stores insert-or-ignore
("a crash anywhere between the steps repeats a step, never skips one"; the first-load kill
test counts the same way). So here every mail appended must come out under exactly one
e-mail id, every e-mail id must be one mail, and a mail may be published more than once only
if its account was the killed replica's.

MAILINTAKE_E2E_MAILBOXES sets the number of mailboxes (300; about a minute).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

import pytest

from shared.contracts import MailFetched
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.e2e.test_fetcher_replicas import holders, pid_of, spread
from tests.integration.test_fetcher_imap import add_account, take_published
from tests.processes import StageProcesses, wait_until
from tests.services import MailServer

MAILBOXES = int(os.environ.get("MAILINTAKE_E2E_MAILBOXES", "300"))
APPENDERS = 8  # IMAP connections filling the mailboxes at once
TRICKLE_EVERY = 5  # while the replicas run, mail keeps coming to every fifth mailbox
# A lease round renews every third of the lease; hundreds of accounts on two shared cores want
# more than the 3 s of the six-account test to stay clear of a slow round.
LEASE = 8
TAKEOVER = LEASE + 30  # seconds the survivor has to hold every account after the kill

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300 + MAILBOXES // 2)]


@dataclass
class Appended:
    """The mail put into the mailboxes: the account each subject went to."""

    account_of: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, box: Mailbox, account_id: str, subjects: list[str]) -> None:
        """APPEND the mails over one connection."""
        client = box.connect()
        try:
            for subject in subjects:
                client.append("INBOX", "", None, make_mail("load@x.org", subject))
                with self.lock:
                    self.account_of[subject] = account_id
        finally:
            client.logout()

    def fill(
        self, boxes: list[tuple[Mailbox, str]], subjects: Callable[[int, str], list[str]]
    ) -> None:
        """Put `subjects(i, account_id)` into the i-th mailbox, a few mailboxes at a time."""
        with ThreadPoolExecutor(APPENDERS) as pool:
            jobs = [pool.submit(self.put, b, a, subjects(i, a)) for i, (b, a) in enumerate(boxes)]
            for job in jobs:
                job.result()

    def subjects(self) -> set[str]:
        with self.lock:
            return set(self.account_of)


class Trickle(threading.Thread):
    """Appends one mail after another to a sample of the mailboxes, until stopped."""

    def __init__(self, appended: Appended, sample: list[tuple[Mailbox, str]]) -> None:
        super().__init__(name="trickle", daemon=True)
        self.appended = appended
        self.sample = sample
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.count = 0

    def run(self) -> None:
        try:
            for n in itertools.count():
                if self.stopped.wait(0.02):
                    return
                box, account_id = self.sample[n % len(self.sample)]
                self.appended.put(box, account_id, [f"during {account_id} {n}"])
                self.count += 1
        except BaseException as exc:
            self.error = exc

    def finish(self) -> int:
        """Stop; how many mails it appended (an append that failed fails the test)."""
        self.stopped.set()
        self.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"appending mail failed: {self.error!r}") from self.error
        return self.count


@dataclass
class Published:
    """The `mail.fetched` events taken from the binder's queue, with their mail's subject."""

    events: list[tuple[str, MailFetched]] = field(default_factory=list)

    def take(self, broker: Broker) -> set[str]:
        """Take what is waiting; every subject seen so far."""
        for event, raw in take_published(broker):
            assert isinstance(event, MailFetched), f"not a fetched mail: {event!r}"
            assert raw is not None, "a small mail travels inline"
            subject = BytesHeaderParser(policy=default_policy).parsebytes(raw)["Subject"]
            self.events.append((str(subject), event))
        return {subject for subject, _ in self.events}


def all_published(
    published: Published, broker: Broker, appended: Appended, what: str, timeout: float
) -> None:
    """Take what the fetcher publishes until every mail appended so far is among it."""

    def missing() -> str:
        left = sorted(appended.subjects() - {s for s, _ in published.events})
        return f"{len(left)} mails not published, e.g. {left[:5]}"

    wait_until(lambda: published.take(broker) >= appended.subjects(), timeout, what, missing)


def once_each(published: Published, appended: Appended, victims: set[str]) -> int:
    """Assert every mail appended was published under one e-mail id of its own (see the
    module's docstring): the number of publishes beyond the first."""
    account_of = appended.account_of
    ids_of: defaultdict[str, set[str]] = defaultdict(set)
    for subject, event in published.events:
        ids_of[subject].add(event.email_id)
    missing = sorted(set(account_of) - set(ids_of))
    assert not missing, f"{len(missing)} mails never published, e.g. {missing[:5]}"
    unknown = sorted(set(ids_of) - set(account_of))
    assert not unknown, f"published but never appended: {unknown[:5]}"
    astray = [s for s, e in published.events if account_of[s] != e.account_id]
    assert not astray, f"published under another account: {astray[:5]}"
    split = {s: ids for s, ids in ids_of.items() if len(ids) > 1}
    assert not split, f"one mail under several e-mail ids: {list(split.items())[:5]}"
    times = Counter(e.email_id for _, e in published.events)
    assert len(times) == len(account_of), "one e-mail id for several mails"
    again = {e.account_id for _, e in published.events if times[e.email_id] > 1}
    assert again <= victims, f"published twice, not the killed replica's: {again - victims}"
    return sum(times.values()) - len(times)


@dataclass
class Replicas:
    """The two fetcher replicas, their logs, and who holds what."""

    store: Store
    ids: list[str]
    procs: list[StageProcesses]

    def logs(self) -> str:
        paths = ", ".join(str(p.log_dir) for p in self.procs)
        return "\n".join([*(p.logs() for p in self.procs), f"(whole logs in {paths})"])

    def pids(self) -> set[int]:
        return {p.procs["fetcher"].pid for p in self.procs}

    def held(self) -> dict[str, str | None]:
        return holders(self.store, self.ids)

    def fair(self) -> bool:
        """Each replica holds half of the accounts, give or take one."""
        counts = spread(self.store, self.ids)
        half = len(self.ids) / 2
        return len(counts) == 2 and sum(counts) == len(self.ids) and counts[0] - half <= 1

    def held_by(self, pid: int) -> set[str]:
        return {a for a, h in self.held().items() if h is not None and pid_of(h) == pid}


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"


def test_hundreds_of_mailboxes_on_two_replicas_one_killed_every_mail_once(
    mail: MailServer,
    store: Store,
    broker: Broker,
    settings: Settings,
    stage_env: dict[str, str],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    boxes = [Mailbox(mail, f"u{uuid.uuid4().hex[:12]}") for _ in range(MAILBOXES)]
    ids = [add_account(store, settings, box).id for box in boxes]
    pairs = list(zip(boxes, ids, strict=True))
    appended = Appended()
    appended.fill(pairs, lambda i, a: [f"before {a} {k}" for k in range(1 + i % 3)])
    print(f"{MAILBOXES} mailboxes, {len(appended.account_of)} mails in {elapsed(started)}")

    env = {**stage_env, "MAILINTAKE_LEASE_SECONDS": str(LEASE)}
    replicas = Replicas(store, ids, [StageProcesses(env, tmp_path / n) for n in ("r1", "r2")])
    for replica in replicas.procs:
        replica.log_dir.mkdir()
    published = Published()
    trickle = Trickle(appended, pairs[::TRICKLE_EVERY])
    try:
        for replica in replicas.procs:
            replica.start("fetcher")
        wait_until(replicas.fair, 30 + MAILBOXES / 10, "half of the accounts each")
        assert {pid_of(h) for h in replicas.held().values()} == replicas.pids()
        print(f"fair share {spread(store, ids)} at {elapsed(started)}")
        all_published(published, broker, appended, "the first loads", 60 + MAILBOXES / 5)
        print(f"first loads published at {elapsed(started)}")

        trickle.start()
        time.sleep(LEASE)  # new mail is being fetched by both replicas
        victim, survivor = replicas.procs
        assert replicas.fair(), f"no longer half each: {spread(store, ids)}"
        victims = replicas.held_by(victim.procs["fetcher"].pid)
        survivor_pid = survivor.procs["fetcher"].pid
        victim.kill("fetcher")
        killed = time.monotonic()
        wait_until(
            lambda: replicas.held_by(survivor_pid) == set(ids),
            TAKEOVER,
            "the survivor holding every account",
        )
        print(f"taken over in {elapsed(killed)} at {elapsed(started)}")
        time.sleep(LEASE)  # mail keeps coming to the survivor
        trickled = trickle.finish()
        appended.fill(pairs, lambda _i, a: [f"after {a}"])
        all_published(published, broker, appended, "every mail", 60 + MAILBOXES / 5)
        print(f"every mail published at {elapsed(started)}")
        time.sleep(LEASE)  # a late publish twice would come now
        published.take(broker)
        again = once_each(published, appended, victims)
        assert replicas.held_by(survivor_pid) == set(ids)
        print(
            f"{len(appended.account_of)} mails ({trickled} while running), "
            f"{len(published.events)} publishes ({again} again, of the killed replica's "
            f"{len(victims)} accounts) at {elapsed(started)}"
        )
    except BaseException:
        print(replicas.logs())  # shown with the failure
        raise
    finally:
        trickle.stopped.set()
        for replica in replicas.procs:
            replica.stop_all()
    assert set(replicas.held().values()) == {None}  # SIGTERM released every lease
