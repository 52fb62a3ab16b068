"""TLS contexts for mailbox connections: verified by default, with an optional extra CA."""

from __future__ import annotations

import ssl
from functools import lru_cache


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Certificates and host names verified against the system roots, or `ca_file`'s CA."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@lru_cache(maxsize=64)
def shared_client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One `client_context` per CA file for the whole process, never changed after it is made.

    Loading the roots costs a few hundred KB and milliseconds per context; a fetcher holding
    thousands of mailboxes makes every connection from the same one (an SSLContext may wrap
    sockets from many threads at once)."""
    return client_context(ca_file)
