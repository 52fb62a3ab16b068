"""`mailintake demo`, as the README's main command runs it, on the local services."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.apiclient import open_api
from tests.services import REPO, MailServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_demo_shows_every_rule_and_every_managers_notifications(
    stage_env: dict[str, str], store: Store, broker: Broker, mail: MailServer, settings: Settings
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "demo", "--timeout", "120"],
        cwd=REPO,
        env=stage_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    mails = out.split("What happened to each mail:")[1].split("Notifications")[0]
    rows = [line.split() for line in mails.strip().splitlines()[1:]]
    outcomes = {row[0]: row for row in rows}
    assert "subject_tag" in outcomes["peter@customer.example"]
    assert "sender" in outcomes["anna@customer.example"]
    for sender in ("lena@new.example", "tom@new.example", "eva@new.example"):
        assert "created" in outcomes[sender]
    assert "skipped" in outcomes["who@unknown.example"]
    assert all(row[-1] == "yes" for row in rows)  # each went by the rule it was sent for

    notes = out.split("in the order they were made:")[1].split("All 6 mails")[0]
    lines = [line.split() for line in notes.strip().splitlines()[1:]]
    kinds = [(line[0], line[1]) for line in lines if line]
    assert kinds.count(("Ivan", "incoming_email")) >= 1  # the order's manager
    assert ("Olga", "incoming_email") in kinds  # Anna's manager, though at lunch
    assigned = [who for who, kind in kinds if kind == "customer_assigned"]
    assert sorted(assigned) in (["Ivan", "Maria", "Maria"], ["Ivan", "Ivan", "Maria"])
    assert re.search(r"^admin \(account owner\)\s+message_skipped\s+Hello\?", notes, re.M)
    assert "All 6 mails went by the rules." in out

    # It ends with a token of its tenant and the curl that reads its letters over the API.
    [(token, url)] = re.findall(r"^  curl -H 'Authorization: Bearer (\S+)' (\S+)$", out, re.M)
    assert url == "http://127.0.0.1:8080/letters"
    for api in open_api(settings, store):
        letters = api.client.get("/letters", headers={"Authorization": f"Bearer {token}"})
        assert letters.status_code == 200 and len(letters.json()["items"]) == 6
