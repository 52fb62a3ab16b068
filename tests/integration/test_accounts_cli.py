"""`mailintake accounts …` on the real store: validation, the per-tenant limit, test, status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ops.cli import main
from shared.accounts import status_row
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, settings_env

pytestmark = pytest.mark.integration

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    settings: Settings,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    for name, value in settings_env(settings).items():
        if name.startswith("MAILINTAKE_"):
            monkeypatch.setenv(name, value)

    def run(*args: str, password: str = "") -> tuple[int, str, str]:
        monkeypatch.setenv("MI_PW", password)
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def add_args(mailbox: Mailbox, tenant: str = "t-cli", *extra: str) -> list[str]:
    s = mailbox.server
    return [
        "accounts", "add", "--tenant", tenant, "--owner", "owner-1", "--protocol", "imap",
        "--host", s.host, "--port", str(s.imaps_port), "--username", mailbox.user,
        "--password-env", "MI_PW", "--ca-file", s.ca_file, *extra,
    ]  # fmt: skip


def test_the_eleventh_account_of_a_tenant_is_refused_and_nothing_is_written(
    cli: Run, mailbox: Mailbox, store: Store
) -> None:
    for _ in range(10):
        code, _out, err = cli(*add_args(mailbox), password="pw")
        assert code == 0, err
    code, _out, err = cli(*add_args(mailbox), password="pw")
    assert code == 2 and "the limit is 10 per tenant" in err
    assert len(err.strip().splitlines()) == 1
    assert store.accounts.count_documents({"tenant_id": "t-cli"}) == 10
    code, _out, err = cli(*add_args(mailbox, "another-tenant"), password="pw")
    assert code == 0, err


def test_bad_values_are_refused_with_one_line_each(
    cli: Run, mailbox: Mailbox, store: Store
) -> None:
    args = add_args(mailbox)
    args[args.index("imap")] = "smtp"
    args[args.index("--port") + 1] = "70000"
    args[args.index("--owner") + 1] = ""
    code, _out, err = cli(*args, password="pw")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 3, err
    assert any("--protocol" in line and "smtp" in line for line in lines)
    assert any("--port" in line and "70000" in line for line in lines)
    assert any("--owner" in line for line in lines)
    assert store.accounts.count_documents({}) == 0


def test_a_manager_group_the_tenant_does_not_have_is_refused_naming_it(
    cli: Run, mailbox: Mailbox, store: Store
) -> None:
    store.manager_groups.insert_many(
        [
            {"_id": "g-new", "tenant_id": "t-cli", "name": "new", "manager_ids": []},
            {"_id": "g-theirs", "tenant_id": "t-other", "name": "theirs", "manager_ids": []},
        ]
    )
    for group in ("g-missing", "g-theirs"):
        code, _out, err = cli(*add_args(mailbox), "--manager-group", group, password="pw")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "--manager-group" in err and repr(group) in err and "t-cli" in err
    assert store.accounts.count_documents({}) == 0
    code, out, err = cli(*add_args(mailbox), "--manager-group", "g-new", password="pw")
    assert code == 0, err
    account = store.accounts.find_one({"tenant_id": "t-cli", "_id": out.strip()})
    assert account is not None and account["manager_group_id"] == "g-new"


def test_plaintext_to_a_remote_host_needs_security_none_said_explicitly(
    cli: Run, store: Store, mailbox: Mailbox
) -> None:
    args = add_args(mailbox)
    args[args.index("--host") + 1] = "mail.example.com"
    args[args.index("--port") + 1] = "143"
    code, _out, err = cli(*args, password="pw")
    assert code == 2 and "--security" in err and len(err.strip().splitlines()) == 1
    code, _out, err = cli(*args, "--security", "none", password="pw")
    assert code == 0, err
    assert store.accounts.count_documents({}) == 1


def test_accounts_test_reports_ok_and_a_rejected_login(cli: Run, mailbox: Mailbox) -> None:
    _code, good, _err = cli(*add_args(mailbox), password=mailbox.server.password)
    _code, bad, _err = cli(*add_args(mailbox), password="wrong-password")
    code, out, _err = cli("accounts", "test", good.strip())
    assert code == 0 and out.startswith("ok: logged in")
    code, out, _err = cli("accounts", "test", bad.strip())
    assert code == 1 and out.startswith("login rejected:")
    assert "wrong-password" not in out


def test_show_says_pop3_has_no_read_flag(cli: Run, mailbox: Mailbox) -> None:
    args = add_args(mailbox)
    args[args.index("imap")] = "pop3"
    args[args.index("--port") + 1] = str(mailbox.server.pop3s_port)
    _code, account_id, _err = cli(*args, password="pw")
    code, out, _err = cli("accounts", "show", account_id.strip())
    assert code == 0 and "POP3 has no read flag" in out
    assert "password_enc" not in out and "auth: password" in out  # the mode, never the secret


def test_status_shows_progress_rate_and_eta_of_a_load() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    doc = {
        "_id": "a1",
        "tenant_id": "t",
        "enabled": True,
        "state": {"status": "ok", "since": now, "last_fetch_at": now},
        "progress": {
            "done": 600,
            "total": 1000,
            "done_at_start": 100,
            "started_at": now - timedelta(seconds=10),
            "updated_at": now,
        },
    }
    row = status_row(doc, now=now)
    assert row["state"] == "syncing" and row["backlog"] == 400
    assert (row["progress"], row["rate"], row["eta"]) == ("600/1000", "50.0/s", "8s")
    doc["state"] = {"status": "error", "since": now, "message": "login rejected"}
    assert status_row(doc, now=now)["message"] == "login rejected"
