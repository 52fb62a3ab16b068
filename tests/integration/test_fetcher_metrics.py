"""The fetcher's /metrics, /healthz and /readyz scraped over HTTP, and `--check` as an exit code."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail, settings_env
from tests.integration.test_fetcher_imap import add_account
from tests.integration.test_metrics import free_port, get
from tests.processes import StageProcesses, wait_until
from tests.services import REPO

pytestmark = pytest.mark.integration

SENDER = "ann.secret@example.com"


def sample(name: str, scrape: str) -> float:
    """The value of one sample (name with its labels) in a scrape."""
    return float(re.findall(rf"^{re.escape(name)} (\S+)$", scrape, re.M)[0])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def fetcher(
    settings: Settings, store: Store, broker: Broker, port: int, tmp_path: Path
) -> Iterator[StageProcesses]:
    env = {**settings_env(settings), "MAILINTAKE_METRICS_PORT": str(port)}
    procs = StageProcesses({**env, "MAILINTAKE_LEASE_SECONDS": "3"}, tmp_path)
    procs.start("fetcher")
    yield procs
    procs.stop_all()


def check(settings: Settings, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fetcher", "--check"],
        cwd=REPO,
        env={**settings_env(settings), "MAILINTAKE_METRICS_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_fetcher_is_ready_and_exports_each_accounts_state_lag_and_backlog(
    mailbox: Mailbox, store: Store, settings: Settings, fetcher: StageProcesses, port: int
) -> None:
    mailbox.append(make_mail(f"Ann <{SENDER}>", "Hello"))
    account = add_account(store, settings, mailbox)
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "/readyz", fetcher.logs)
    assert get(port, "/healthz") == (200, "ok\n")
    ok = f'mailintake_account_state{{account="{account.id}",state="ok"}}'

    fetched = f'mailintake_mails_fetched_total{{account="{account.id}"}}'

    def account_ok() -> bool:  # the state is saved a moment before the fetch is counted
        raw = get(port, "/metrics")[1]
        return ok in raw and fetched in raw and sample(ok, raw) == sample(fetched, raw) == 1.0

    wait_until(account_ok, 30, "the account ok and its mail counted", fetcher.logs)

    scrape = get(port, "/metrics")[1]
    assert sample(ok, scrape) == 1.0
    assert sample(f'mailintake_account_state{{account="{account.id}",state="error"}}', scrape) == 0
    assert sample(fetched, scrape) == 1.0
    assert sample(f'mailintake_account_fetch_lag_seconds{{account="{account.id}"}}', scrape) < 60
    assert sample(f'mailintake_account_backlog{{account="{account.id}"}}', scrape) == 0.0
    assert SENDER not in scrape and "@" not in scrape and mailbox.user not in scrape

    result = check(settings, port)
    assert result.returncode == 0 and result.stdout.strip() == "fetcher: ready"


def test_a_replica_exports_the_accounts_it_holds_and_not_anothers(
    mailbox: Mailbox, store: Store, settings: Settings, fetcher: StageProcesses, port: int
) -> None:
    """Each account is exported by the one replica that holds it: a sum over replicas counts
    it once, and a scrape reads only what the replica holds."""
    held_elsewhere = add_account(store, settings, Mailbox(mailbox.server, "elsewhere-1"))
    far = datetime.now(UTC) + timedelta(hours=1)
    store["leases"].insert_one(
        {"_id": f"{held_elsewhere.id}:1", "tenant_id": held_elsewhere.tenant_id,
         "account_id": held_elsewhere.id, "term": 1, "holder": "another-replica", "until": far}
    )  # fmt: skip
    ours = add_account(store, settings, mailbox)
    mine = f'mailintake_account_state{{account="{ours.id}",state="ok"}}'
    wait_until(lambda: mine in get(port, "/metrics")[1], 30, "our account", fetcher.logs)
    assert f'account="{held_elsewhere.id}"' not in get(port, "/metrics")[1]
    assert sample("mailintake_fetcher_accounts_held", get(port, "/metrics")[1]) == 1.0


def test_check_fails_with_one_line_when_no_fetcher_answers(settings: Settings) -> None:
    result = check(settings, free_port())
    assert result.returncode == 1
    assert result.stderr.strip().startswith("fetcher: not ready: nothing answers")
