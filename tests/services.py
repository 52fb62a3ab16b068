"""Where the real services are: the environment, the local set-up's env file, or Docker."""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

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
