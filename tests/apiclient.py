"""The HTTP API in a test: the app on the test's real store, its tokens, seeded letters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from ops.tokens import create_token
from shared.blobs import GridFsBlobStore
from shared.letter import letter_fields
from shared.logging import configure_logging
from shared.mail import parse_mail
from shared.settings import Settings
from shared.store import Store

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@dataclass
class Api:
    """A TestClient on the app, and tokens made on its store."""

    client: TestClient
    store: Store

    def token(self, tenant: str | None, name: str = "test") -> dict[str, str]:
        """Authorization headers of a new token of `tenant` (None: an operator's)."""
        token = create_token(self.store, tenant_id=tenant, name=name, now=datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}


def api_settings(settings: Settings, **extra: Any) -> ApiSettings:
    fields = {k: getattr(settings, k) for k in Settings.model_fields}
    return ApiSettings(**{**fields, "api_poll_seconds": 0.05, **extra})


def open_api(settings: Settings, store: Store) -> Iterator[Api]:
    # Logging as `python -m api` sets it, to this test's stderr (an earlier test may have left
    # it writing to a stream pytest has closed since).
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(api_settings(settings), store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, store)


def letter_mail(sender: str, subject: str, *, attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "shop@example.com", subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@example.com>"
    msg.set_content(f"text of {subject}")
    msg.add_alternative(f"<p onclick='x()'>html of {subject}<script>bad()</script></p>", "html")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="image", subtype="png", filename="pic 1.png")
    return msg.as_bytes()


def seed_letter(
    store: Store,
    email_id: str,
    tenant: str,
    *,
    minutes: int,
    status: str = "bound",
    attachment: bytes | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A mail's document and blobs as the binder writes them, received `minutes` after T0."""
    raw = letter_mail("ann@example.com", f"mail {email_id}", attachment=attachment)
    mail = parse_mail(raw)
    doc: dict[str, Any] = {
        "_id": email_id,
        "tenant_id": tenant,
        "status": status,
        "size": len(raw),
        "from_address": "ann@example.com",
        "subject": f"mail {email_id}",
        "received_at": T0 + timedelta(minutes=minutes),
        "created_at": T0 + timedelta(minutes=minutes),
        "matched_by": "sender" if status == "bound" else None,
    }
    if status == "bound":
        blobs = GridFsBlobStore(store)
        doc.update(letter_fields(email_id, tenant, mail, raw=raw, raw_ref=None, blobs=blobs))
    doc.update(fields)
    store.emails.insert_one(doc)
    return doc


def seed_tenant(store: Store, tenant: str) -> dict[str, str]:
    """One of each thing a tenant has, keyed `<tenant>-<kind>`: the ids, by kind."""
    ids = {k: f"{tenant}-{k}" for k in ("customer", "order", "manager", "user", "letter")}
    store.customers.insert_one({"_id": ids["customer"], "tenant_id": tenant, "emails": []})
    store.orders.insert_one(
        {"_id": ids["order"], "tenant_id": tenant, "number": "1", "customer_id": ids["customer"]}
    )
    store.managers.insert_one(
        {"_id": ids["manager"], "tenant_id": tenant, "name": "M", "status": "busy", "online": True}
    )
    store.notifications.insert_one(
        {
            "_id": f"{tenant}-note",
            "tenant_id": tenant,
            "user_id": ids["manager"],
            "kind": "incoming_email",
            "text": "mail",
            "created_at": T0,
        }
    )
    seed_letter(
        store,
        ids["letter"],
        tenant,
        minutes=1,
        attachment=b"\x89PNG-data",
        customer_id=ids["customer"],
        order_id=ids["order"],
    )
    ids["notification"] = f"{tenant}-note"
    ids["user"] = ids["manager"]
    return ids
