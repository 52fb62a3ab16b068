"""`mailintake run api`: uvicorn serves the API on MAILINTAKE_API_ADDR with the probes and
metrics of every process; `--check` turns its readiness into an exit code; SIGTERM ends it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ops.tokens import create_token
from shared.settings import Settings
from shared.store import Store
from tests.apiclient import seed_tenant
from tests.conftest import settings_env
from tests.processes import wait_until
from tests.services import REPO

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.fixture
def served(settings: Settings, store: Store) -> Iterator[tuple[str, dict[str, str]]]:
    env = {**settings_env(settings), "MAILINTAKE_API_ADDR": f"127.0.0.1:{free_port()}"}
    process = subprocess.Popen([sys.executable, "-m", "ops.cli", "run", "api"], cwd=REPO, env=env)
    base = "http://" + env["MAILINTAKE_API_ADDR"]
    try:
        wait_until(lambda: get(base + "/readyz")[0] == 200, 30, "the API's /readyz")
        yield base, env
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_uvicorn_serves_the_api_with_probes_and_metrics(
    served: tuple[str, dict[str, str]], store: Store
) -> None:
    base, env = served
    ids = seed_tenant(store, "t-a")
    token = create_token(store, tenant_id="t-a", name="curl", now=datetime.now(UTC))
    status, body = get(f"{base}/customers/{ids['customer']}/letters", token)
    assert status == 200 and [i["id"] for i in json.loads(body)["items"]] == [ids["letter"]]
    assert get(base + "/healthz") == (200, b"ok\n")
    assert json.loads(get(base + "/openapi.json")[1])["openapi"].startswith("3.1")
    metrics = get(base + "/metrics")[1].decode()
    assert (
        'mailintake_api_requests_total{route="/customers/{customer_id}/letters",status="200"}'
        in metrics
    )

    check = [sys.executable, "-m", "ops.cli", "run", "api", "--check"]
    ready = subprocess.run(check, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert ready.returncode == 0 and ready.stdout == "api: ready\n"
    elsewhere = {**env, "MAILINTAKE_API_ADDR": f"127.0.0.1:{free_port()}"}
    down = subprocess.run(
        check, cwd=REPO, env=elsewhere, capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 1 and "api: not ready: nothing answers at" in down.stderr
