"""TLS contexts for mailbox connections: verified by default, with an optional extra CA."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Certificates and host names verified against the system roots, or `ca_file`'s CA."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
