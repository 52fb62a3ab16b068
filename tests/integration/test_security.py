"""Secrets stay secret and certificates are checked, on the real store, broker and Dovecot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ops.cli import main
from shared.crypto import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, settings_env
from tests.integration.test_fetcher_imap import add_account
from tests.processes import StageProcesses, wait_until

pytestmark = pytest.mark.integration

Run = Callable[..., tuple[int, str, str]]
IMAP_PASSWORD = "Wr0ng-Imap-Pa55word"
AMQP_REJECTED = "amqp://intruder:Amqp-Rejected-5ecret@127.0.0.1:5672/"
AMQP_UNREACHABLE = "amqp://intruder:Amqp-Unreachable-5ecret@127.0.0.1:9/"
MONGO_UNREACHABLE = "mongodb://intruder:Mongo-Unreachable-5ecret@127.0.0.1:9/x"
SECRETS = ("Wr0ng-Imap", "Amqp-Rejected", "Amqp-Unreachable", "Mongo-Unreachable", "intruder:")


@pytest.fixture
def cli(
    settings: Settings,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """`mailintake …` in this process, on the test's database; (exit code, stdout, stderr)."""
    for name, value in settings_env(settings).items():
        if name.startswith("MAILINTAKE_"):
            monkeypatch.setenv(name, value)

    def run(*args: str, password: str = "") -> tuple[int, str, str]:
        monkeypatch.setenv("MI_PW", password)
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def add(cli: Run, mailbox: Mailbox, password: str, *extra: str) -> str:
    s = mailbox.server
    code, out, err = cli(
        "accounts", "add", "--tenant", "t-sec", "--owner", "owner", "--protocol", "imap",
        "--host", s.host, "--port", str(s.imaps_port), "--username", mailbox.user,
        "--password-env", "MI_PW", *extra, password=password,
    )  # fmt: skip
    assert code == 0, err
    return out.strip()


def test_the_stored_account_document_holds_no_plaintext_password(
    cli: Run, mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    password = "Plain-Text-Must-Not-Be-Stored-42"
    account_id = add(cli, mailbox, password, "--ca-file", mailbox.server.ca_file)
    raw = store.accounts.with_options(codec_options=store.accounts.codec_options.with_options(
        document_class=RawBSONDocument
    )).find_one({"_id": account_id})  # fmt: skip
    assert raw is not None
    assert password.encode() not in raw.raw
    assert settings.secret_key is not None
    box = SecretBox(settings.secret_key.get_secret_value())
    assert box.decrypt(raw["password_enc"]) == password


def other_ca(tmp_path: Path) -> str:
    """A CA of our own, which never signed Dovecot's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_an_untrusted_certificate_is_refused_unless_ca_file_names_its_ca(
    cli: Run, mailbox: Mailbox, tmp_path: Path
) -> None:
    pw = mailbox.server.password
    untrusted = add(cli, mailbox, pw)
    wrong_ca = add(cli, mailbox, pw, "--ca-file", other_ca(tmp_path))
    right_ca = add(cli, mailbox, pw, "--ca-file", mailbox.server.ca_file)
    for account_id in (untrusted, wrong_ca):
        code, out, _err = cli("accounts", "test", account_id)
        assert code == 1 and out.startswith("TLS certificate not trusted"), out
    code, out, _err = cli("accounts", "test", right_ca)
    assert code == 0 and out.startswith("ok: logged in"), out


@pytest.fixture
def failing_stages(
    settings: Settings, store: Store, mailbox: Mailbox, tmp_path: Path
) -> Iterator[list[StageProcesses]]:
    """A fetcher with a wrong mailbox password; stages given a rejected or unreachable URL."""
    add_account(store, settings, mailbox, password=IMAP_PASSWORD, tenant_id="t-sec")
    base = settings_env(settings) | {"MAILINTAKE_LOG_LEVEL": "DEBUG"}
    envs = {
        "fetcher": base | {"MAILINTAKE_LEASE_SECONDS": "3"},
        "binder": base | {"MAILINTAKE_MONGO_URL": MONGO_UNREACHABLE},
        "assigner": base | {"MAILINTAKE_AMQP_URL": AMQP_UNREACHABLE},
        "notifier": base | {"MAILINTAKE_AMQP_URL": AMQP_REJECTED},
    }
    procs = [StageProcesses(env, tmp_path) for env in envs.values()]
    for stage, proc in zip(envs, procs, strict=True):
        proc.start(stage)
    yield procs
    for proc in procs:
        proc.stop_all()


def test_login_failures_and_connection_errors_never_log_a_password_or_url_credentials(
    failing_stages: list[StageProcesses], store: Store, tmp_path: Path
) -> None:
    logs = {stage: tmp_path / f"{stage}.log" for stage in STAGE_SIGNS}

    def all_failed() -> bool:
        return all(sign in _read(logs[stage]) for stage, sign in STAGE_SIGNS.items())

    wait_until(all_failed, timeout=60, what="every stage to log its failure",
               on_timeout=lambda: failing_stages[0].logs())  # fmt: skip

    def state() -> dict[str, Any]:
        return (store.accounts.find_one({"tenant_id": "t-sec"}) or {}).get("state") or {}

    # the retry is logged a moment before the account's state is saved
    wait_until(lambda: state().get("reason") == "login_rejected", 10, "the account's state")
    for proc in failing_stages:  # kill: a stage still dialling a dead broker is slow to stop
        for stage in proc.procs:
            proc.kill(stage)
    for stage, path in logs.items():
        text = _read(path)
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{stage} logged {leaked}:\n{text[-3000:]}"


# What each stage's log shows once it has met its failure (so the check above is not vacuous).
STAGE_SIGNS = {
    "fetcher": "login",
    "binder": "store_connect_retry",
    "assigner": "***@127.0.0.1:9",
    "notifier": "***@127.0.0.1:5672",
}


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
