"""Real-service fixtures: RabbitMQ, the MongoDB-compatible store and Dovecot.

URLs come from the environment (or deploy/local's env file); where they are unset and a Docker
engine answers, RabbitMQ and MongoDB are started with testcontainers. Each test gets its own
broker namespace (exchange and queues) and its own database.
"""

from __future__ import annotations

import imaplib
import os
import re
import ssl
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import pytest

from shared.contracts import MailBound, MailFetched
from shared.crypto import SecretBox
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from tests.services import (
    MailServer,
    forget_namespace,
    load_local_env,
    mail_server,
    missing,
    require_url,
    sweep_stale_test_state,
)

load_local_env()


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if "MAILINTAKE_AMQP_URL" not in os.environ and _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
            params = rabbit.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/"
        return
    yield require_url("MAILINTAKE_AMQP_URL", "RabbitMQ", 5672)


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    if "MAILINTAKE_MONGO_URL" not in os.environ and _docker_answers():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as mongo:
            yield mongo.get_connection_url()
        return
    yield require_url("MAILINTAKE_MONGO_URL", "the MongoDB-compatible store", 27017)


@pytest.fixture(scope="session")
def mail() -> MailServer:
    return mail_server()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def secret_key() -> str:
    return os.environ.get("MAILINTAKE_SECRET_KEY") or SecretBox.generate_key()


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_test_state() -> None:
    """Under CI, remove the queues and databases that earlier test runs left behind."""
    if os.environ.get("CI"):
        sweep_stale_test_state(
            os.environ.get("MAILINTAKE_RABBITMQ_MANAGEMENT_URL"),
            os.environ.get("MAILINTAKE_MONGO_URL"),
        )


@pytest.fixture
def settings(amqp_url: str, mongo_url: str, namespace: str, secret_key: str) -> Iterator[Settings]:
    """Settings of one test: its own namespace and database, short retry delays.

    Afterwards the test's queues, exchange and database are removed (best effort: a fault
    test may leave a service down; the CI sweep catches what is left).
    """
    settings = _test_settings(amqp_url, mongo_url, namespace, secret_key)
    yield settings
    forget_namespace(settings)


def _test_settings(amqp_url: str, mongo_url: str, namespace: str, secret_key: str) -> Settings:
    base = mongo_url.split("?")[0].rsplit("/", 1)[0]
    query = "?" + mongo_url.split("?", 1)[1] if "?" in mongo_url else ""
    return Settings(
        amqp_url=amqp_url,
        mongo_url=f"{base}/{namespace}{query}",
        secret_key=secret_key,
        namespace=namespace,
        retry_base_seconds=0.2,
        retry_max_seconds=2.0,
        max_retries=3,
        delivery_limit=3,
        log_format="console",
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process use `settings`."""
    env = dict(os.environ)
    env.update(
        {
            "MAILINTAKE_AMQP_URL": settings.amqp_url.get_secret_value(),
            "MAILINTAKE_MONGO_URL": settings.mongo_url.get_secret_value(),
            "MAILINTAKE_SECRET_KEY": settings.secret_key.get_secret_value()
            if settings.secret_key
            else "",
            "MAILINTAKE_NAMESPACE": settings.namespace,
            "MAILINTAKE_RETRY_BASE_SECONDS": str(settings.retry_base_seconds),
            "MAILINTAKE_RETRY_MAX_SECONDS": str(settings.retry_max_seconds),
            "MAILINTAKE_MAX_RETRIES": str(settings.max_retries),
            "MAILINTAKE_DELIVERY_LIMIT": str(settings.delivery_limit),
            "MAILINTAKE_LOG_FORMAT": "json",
        }
    )
    return env


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
    s.ping()
    s.ensure_indexes()
    yield s
    s.client.drop_database(settings.mongo_database)
    s.close()


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    b = Broker(
        settings.amqp_url.get_secret_value(),
        Topology(settings.namespace, settings.delivery_limit),
        prefetch=10,
    )
    b.connect()
    b.declare()
    yield b
    delete_topology(b)
    b.close()


def delete_topology(b: Broker) -> None:
    """Remove a test's exchanges and queues."""
    b.connect()
    for queue in b.topology.all_queues():
        b.channel.queue_delete(queue)
    b.channel.exchange_delete(b.topology.exchange)
    b.channel.exchange_delete(b.topology.failures_exchange)


@dataclass
class Mailbox:
    """A fresh Dovecot user for one test, filled over IMAP APPEND."""

    server: MailServer
    user: str

    def connect(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=self.server.ca_file)
        client = imaplib.IMAP4_SSL(self.server.host, self.server.imaps_port, ssl_context=context)
        client.login(self.user, self.server.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        client = self.connect()
        try:
            client.append(folder, flags, None, raw)
        finally:
            client.logout()

    def flags(self, folder: str = "INBOX") -> list[str]:
        """The flags of every message in the folder, in UID order."""
        client = self.connect()
        try:
            client.select(folder)
            _typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
            return [d.decode() for d in data if isinstance(d, bytes)]
        finally:
            client.logout()

    def flags_by_subject(self, folder: str = "INBOX") -> dict[str, str]:
        """The flags of every message in the folder, by its Subject."""
        client = self.connect()
        try:
            client.select(folder)
            items = "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
            _typ, data = client.uid("FETCH", "1:*", items)
        finally:
            client.logout()
        found = {}
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                subject = item[1].decode(errors="replace").partition(":")[2].strip()
                found[subject] = flags.group(1).decode() if flags else ""
        return found

    def count(self, folder: str = "INBOX") -> int:
        client = self.connect()
        try:
            _typ, data = client.select(folder)
            return int(data[0] or 0)
        finally:
            client.logout()


@pytest.fixture
def mailbox(mail: MailServer) -> Mailbox:
    return Mailbox(mail, f"u{uuid.uuid4().hex[:12]}")


def store_accounts(store: Store, events: Iterable[MailFetched | MailBound]) -> None:
    """Store the accounts that `events` name, in their tenants, with the events' options (the
    binder and the assigner take an account's options from the store); one account, one set
    of options."""
    accounts: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        options = event.options.model_dump()
        held = accounts.setdefault((event.tenant_id, event.account_id), options)
        assert held == options, f"account {event.account_id} named with two sets of options"
    for (tenant_id, account_id), options in accounts.items():
        store.accounts.update_one(
            {"_id": account_id, "tenant_id": tenant_id}, {"$set": options}, upsert=True
        )


def make_mail(sender: str, subject: str, body: str = "Hello", **headers: Any) -> bytes:
    """A small valid RFC 5322 message."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "shop@example.com"
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="example.com")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


__all__ = ["Mailbox", "make_mail", "missing", "settings_env"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can print logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
