"""The webhook sender over HTTP(S), with the standard library: timeouts, no redirects, and a
connection only to the address the network policy checked (Host and TLS stay on the name)."""

from __future__ import annotations

import http.client
import socket
import ssl
from http import HTTPStatus
from urllib.parse import urlsplit

from notifier.ports import DeliveryResult
from shared.logging import get_logger
from shared.netpolicy import AddressRefusedError, HostNotResolvedError, IPAddress, NetPolicy

log = get_logger("mailintake.webhook")

# 408 (timeout) and 429 (slow down) are worth another try; other 4xx are not.
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_ANSWER_BYTES = 64 * 1024  # read (and drop) at most this much of an answer's body


def _host(url: str) -> str:
    """The host and port only: a webhook URL's path or query may carry a token."""
    return urlsplit(url).netloc.rpartition("@")[2]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to `ip`; the Host header names the URL's host."""

    def __init__(self, host: str, port: int, *, ip: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.pinned_ip), self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to `ip`; SNI and the certificate's host name check are on the URL's host."""

    default_port = http.client.HTTPS_PORT

    def __init__(
        self, host: str, port: int, *, ip: IPAddress, timeout: float, tls: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, ip=ip, timeout=timeout)
        self.tls = tls

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.host)


def _short(exc: BaseException) -> str:
    """What failed, in our words: nothing the remote server said is echoed."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate not valid for the host"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.HTTPException):
        return "invalid HTTP answer"
    return f"connection failed ({type(exc).__name__})"


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


class PinnedWebhookSender:
    """POSTs with http.client to the address `policy` allowed; any answer below 300 is
    success. A redirect is an answer we do not follow: the body goes only where configured."""

    def __init__(self, policy: NetPolicy, tls: ssl.SSLContext | None = None) -> None:
        self._policy = policy
        self._tls = tls or ssl.create_default_context()

    def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> DeliveryResult:
        parts = urlsplit(url)
        host, secure = parts.hostname or "", parts.scheme == "https"
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            return DeliveryResult(False, None, "the webhook URL's port is invalid", retryable=False)
        try:
            ip = self._policy.vet(host, port, what="webhook host")
        except AddressRefusedError as exc:
            log.warning("webhook_refused", host=_host(url), error=str(exc))
            return DeliveryResult(False, None, str(exc), retryable=False)
        except HostNotResolvedError as exc:
            log.warning("webhook_unreachable", host=_host(url), error=str(exc))
            return DeliveryResult(False, None, str(exc), retryable=True)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn = self._open(host, port, ip, secure, timeout)
            status = self._exchange(conn, target, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            error = _short(exc)
            log.warning("webhook_unreachable", host=_host(url), ip=str(ip), error=error)
            return DeliveryResult(False, None, error, retryable=True)
        log.info("webhook_posted", host=_host(url), status=status)
        if status < 300:
            return DeliveryResult(True, status)
        retryable = status >= 500 or status in RETRYABLE_4XX
        return DeliveryResult(False, status, _status_text(status), retryable=retryable)

    def _open(
        self, host: str, port: int, ip: IPAddress, secure: bool, timeout: float
    ) -> _PinnedHTTPConnection:
        if secure:
            return _PinnedHTTPSConnection(host, port, ip=ip, timeout=timeout, tls=self._tls)
        return _PinnedHTTPConnection(host, port, ip=ip, timeout=timeout)

    @staticmethod
    def _exchange(
        conn: _PinnedHTTPConnection, target: str, body: bytes, headers: dict[str, str]
    ) -> int:
        """The answer's status; its body is read (bounded) and dropped, never stored."""
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(MAX_ANSWER_BYTES)
            return int(response.status)
        finally:
            conn.close()
