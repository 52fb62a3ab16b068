"""The webhook sender over HTTP(S), with the standard library: timeouts, no redirects."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from notifier.ports import DeliveryResult
from shared.logging import get_logger, redact_text

log = get_logger("mailintake.webhook")

# 408 (timeout) and 429 (slow down) are worth another try; other 4xx are not.
RETRYABLE_4XX = frozenset({408, 425, 429})


def _host(url: str) -> str:
    """The host and port only: a webhook URL's path or query may carry a token."""
    return urlsplit(url).netloc.rpartition("@")[2]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer we do not follow: the signed body goes only where configured."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class UrllibWebhookSender:
    """POSTs with urllib; any answer below 300 is success."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> DeliveryResult:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            exc.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = redact_text(f"{type(exc).__name__}: {reason}")[:300]
            log.warning("webhook_unreachable", host=_host(url), error=error)
            return DeliveryResult(False, None, error, retryable=True)
        log.info("webhook_posted", host=_host(url), status=status)
        if status < 300:
            return DeliveryResult(True, status)
        retryable = status >= 500 or status in RETRYABLE_4XX
        return DeliveryResult(False, status, f"HTTP {status}", retryable=retryable)
