"""A stage's /metrics, /healthz and /readyz scraped over HTTP, and `--check` as an exit code."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.contracts import AccountOptions, MailFetched
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.wire import Outgoing, encode_event
from tests.conftest import make_mail, settings_env, store_accounts
from tests.processes import StageProcesses, wait_until
from tests.services import REPO

pytestmark = pytest.mark.integration

SENDER = "ann.secret@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def sample(name: str, raw: bytes) -> float:
    """The value of one sample in a scrape of the binder's metrics."""
    return float(re.findall(rf"^{re.escape(name)} (\S+)$", raw, re.M)[0])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def binder(
    settings: Settings, store: Store, broker: Broker, port: int, tmp_path: Path
) -> Iterator[StageProcesses]:
    env = {**settings_env(settings), "MAILINTAKE_METRICS_PORT": str(port)}
    procs = StageProcesses(env, tmp_path)
    procs.start("binder")
    yield procs
    procs.stop_all()


def check(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "binder", "--check"],
        cwd=REPO,
        env={**settings_env(settings), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_running_stage_is_alive_ready_and_counts_outcomes(
    settings: Settings, store: Store, broker: Broker, binder: StageProcesses, port: int
) -> None:
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "/readyz", binder.logs)
    assert get(port, "/healthz") == (200, "ok\n")
    raw = make_mail(f"Ann <{SENDER}>", "Hello")
    event = MailFetched.for_mail(
        email_id="mail-1",
        now=datetime.now(UTC),
        tenant_id="t-metrics",
        account_id="acct-1",
        options=AccountOptions(owner_id="u-1"),
        protocol="imap",
        size=len(raw),
    )
    store_accounts(store, [event])
    broker.publish([encode_event(event, raw)])
    broker.publish([Outgoing("mail.fetched.acct-1", b"{}", type="mail.nonsense")])

    ok = 'mailintake_messages_processed_total{outcome="ok",stage="binder"}'
    dead = 'mailintake_messages_processed_total{outcome="dead_lettered",stage="binder"}'

    def both() -> bool:  # `ok` is counted once the batch commits, after its dead letter
        scrape = get(port, "/metrics")[1]
        try:
            return sample(ok, scrape) == sample(dead, scrape) == 1.0
        except IndexError:  # not counted yet
            return False

    wait_until(both, 30, "the mail and the dead letter counted", binder.logs)
    scrape = get(port, "/metrics")[1]
    assert sample('mailintake_dead_letters_total{stage="binder"}', scrape) == 1.0
    assert sample('mailintake_handling_seconds_count{stage="binder"}', scrape) == 2.0
    assert SENDER not in scrape and "@" not in scrape  # no addresses as label values

    assert check(settings, MAILINTAKE_METRICS_PORT=str(port)).returncode == 0
    assert get(port, "/nothing")[0] == 404


def test_check_fails_with_one_line_when_nothing_answers(settings: Settings, port: int) -> None:
    result = check(settings, MAILINTAKE_METRICS_PORT=str(port))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("binder: not ready: nothing answers")


def test_check_without_a_port_checks_the_broker_and_the_store(
    settings: Settings, broker: Broker, store: Store
) -> None:
    assert check(settings).returncode == 0
    down = check(settings, MAILINTAKE_AMQP_URL="amqp://guest:guest@127.0.0.1:1/")
    assert down.returncode == 1 and "RabbitMQ at amqp://***@127.0.0.1:1/" in down.stderr


def test_readyz_says_what_is_missing_while_the_broker_is_unreachable(
    settings: Settings, store: Store, port: int, tmp_path: Path
) -> None:
    env = {
        **settings_env(settings),
        "MAILINTAKE_METRICS_PORT": str(port),
        "MAILINTAKE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
    }
    procs = StageProcesses(env, tmp_path)
    procs.start("binder")
    try:
        wait_until(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz", procs.logs)
        code, body = get(port, "/readyz")
        assert code == 503 and "broker: not consuming" in body
    finally:
        procs.kill("binder")  # it would keep trying to connect until its timeout
        procs.stop_all()
