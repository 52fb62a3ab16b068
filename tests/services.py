"""Where the real services are: the environment, the local set-up's env file, or Docker."""

from __future__ import annotations

import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from shared.settings import Settings

LOCAL_DIR = Path(os.environ.get("MAILINTAKE_LOCAL_DIR", "/var/tmp/mailintake-local"))


def load_local_env() -> None:
    """Take unset MAILINTAKE_* variables from deploy/local's env file, when it exists."""
    env_file = LOCAL_DIR / "env.sh"
    if not env_file.is_file():
        return
    for line in env_file.read_text().splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            name, value = parts[1].split("=", 1)
            os.environ.setdefault(name, value)


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def missing(service: str, detail: str) -> None:
    """Fail with one line naming the missing service under CI; skip elsewhere."""
    message = f"{service} is not available ({detail}); start it with `make services`"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_url(name: str, service: str, default_port: int) -> str:
    url = os.environ.get(name)
    if not url:
        missing(service, f"{name} is not set")
    assert url is not None
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if not reachable(host, port):
        missing(service, f"nothing answers at {host}:{port}")
    return url


@dataclass(frozen=True)
class MailServer:
    """The local Dovecot: ports, the test CA, the password any fresh test user logs in with."""

    host: str
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    ca_file: str
    password: str


def mail_server() -> MailServer:
    env = os.environ
    if "MAILINTAKE_TEST_IMAP_HOST" not in env:
        missing("Dovecot", "MAILINTAKE_TEST_IMAP_HOST is not set")
    server = MailServer(
        host=env["MAILINTAKE_TEST_IMAP_HOST"],
        imap_port=int(env.get("MAILINTAKE_TEST_IMAP_PORT", "10143")),
        imaps_port=int(env.get("MAILINTAKE_TEST_IMAPS_PORT", "10993")),
        pop3_port=int(env.get("MAILINTAKE_TEST_POP3_PORT", "10110")),
        pop3s_port=int(env.get("MAILINTAKE_TEST_POP3S_PORT", "10995")),
        ca_file=env.get("MAILINTAKE_TEST_CA", str(LOCAL_DIR / "tls" / "ca.pem")),
        password=env.get("MAILINTAKE_TEST_MAIL_PASSWORD", ""),
    )
    if not reachable(server.host, server.imaps_port):
        missing("Dovecot", f"nothing answers at {server.host}:{server.imaps_port}")
    return server


REPO = Path(__file__).resolve().parents[1]


def rabbitmqctl(*args: str, timeout: float = 120) -> None:
    """Run rabbitmqctl against the local broker (deploy/local's environment)."""
    import subprocess

    script = f'source "{REPO}/deploy/local/lib.sh" && rabbitmqctl "$@"'
    subprocess.run(
        ["bash", "-c", script, "rabbitmqctl", *args],
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def service_ctl(service: str, action: str, timeout: float = 180) -> None:
    """Start, stop or restart one local service (deploy/local/ctl.sh)."""
    import subprocess

    subprocess.run(
        ["bash", str(REPO / "deploy/local/ctl.sh"), service, action],
        check=True,
        capture_output=True,
        timeout=timeout,
    )


TEST_NAMESPACE = re.compile(r"^t[0-9a-f]{10}$")


def forget_namespace(settings: Settings) -> None:
    """Delete one test's queues, exchanges and database; never raises."""
    from shared.messaging import Broker
    from shared.store import Store
    from shared.topology import Topology

    broker = Broker(
        settings.amqp_url.get_secret_value(), Topology(settings.namespace), connect_timeout=3
    )
    try:
        broker.connect()
        for queue in broker.topology.all_queues():
            broker.channel.queue_delete(queue)
        broker.channel.exchange_delete(broker.topology.exchange)
        broker.channel.exchange_delete(broker.topology.failures_exchange)
    except Exception:  # a fault test may have left the broker down
        pass
    finally:
        broker.close()
    store = Store(settings.mongo_url.get_secret_value(), settings.mongo_database, timeout_ms=2000)
    try:
        store.client.drop_database(settings.mongo_database)
    except Exception:  # likewise for the store
        pass
    finally:
        store.close()


def sweep_stale_test_state(management_url: str | None, mongo_url: str | None) -> None:
    """Delete queues and databases named like test namespaces (t + 10 hex digits)."""
    import base64
    import json
    import urllib.parse
    import urllib.request

    if management_url:
        parts = urllib.parse.urlsplit(management_url)
        auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        origin = f"{parts.scheme}://{parts.hostname}:{parts.port}"

        def call(method: str, path: str) -> bytes:
            request = urllib.request.Request(
                origin + path, method=method, headers={"Authorization": f"Basic {auth}"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return bytes(response.read())

        try:
            queues = json.loads(call("GET", "/api/queues?columns=name,vhost"))
            for q in queues:
                if TEST_NAMESPACE.match(q["name"].split(".")[0]):
                    vhost = urllib.parse.quote(q["vhost"], safe="")
                    call("DELETE", f"/api/queues/{vhost}/{urllib.parse.quote(q['name'], safe='')}")
        except OSError:
            pass
    if mongo_url:
        from pymongo import MongoClient

        client: MongoClient[dict[str, object]] = MongoClient(
            mongo_url, serverSelectionTimeoutMS=3000
        )
        try:
            for name in client.list_database_names():
                if TEST_NAMESPACE.match(name):
                    client.drop_database(name)
        except Exception:
            pass
        finally:
            client.close()


def collection_size(collection: Collection[Any]) -> int:
    """Documents in `collection`, from collStats: no document is read.

    For progress polled often: on FerretDB a filtered count reads the whole collection.
    """
    return int(collection.database.command("collStats", collection.name).get("count", 0))
