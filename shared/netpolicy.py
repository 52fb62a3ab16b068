"""Where mailintake may connect: webhook and mailbox hosts kept off the inside network.

A host is resolved once and each address checked: loopback, private (RFC 1918, ULA),
link-local (169.254.0.0/16 with the cloud metadata address, fe80::/10), shared (100.64.0.0/10),
multicast, unspecified and every other range that is not globally routable are refused —
also in their IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64) — unless an
operator allow-lists a network. The caller connects to the address that was checked, so a
second lookup cannot lead elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import (
    ConfigError,
    MailboxRejectedError,
    MailboxUnavailableError,
    PermanentError,
    TransientError,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WEBHOOK_ALLOW_ENV = "MAILINTAKE_WEBHOOK_ALLOW_NETWORKS"
MAILBOX_ALLOW_ENV = "MAILINTAKE_MAILBOX_ALLOW_NETWORKS"
MAILBOX_DENY_ENV = "MAILINTAKE_MAILBOX_DENY_PRIVATE"
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefusedError(PermanentError):
    """Raised when a host resolves only to addresses that mailintake must not connect to."""


class HostNotResolvedError(TransientError):
    """Raised when a host name cannot be resolved (DNS may answer later)."""


class NetPolicySettings(BaseSettings):
    """The operator's choices, from MAILINTAKE_* (read once per process)."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_", extra="ignore", frozen=True)

    webhook_allow_networks: str = ""
    mailbox_deny_private: bool = False
    mailbox_allow_networks: str = ""


def parse_networks(text: str, *, setting: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs; ConfigError naming the setting and the bad value."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{setting}: {item!r} is not a network (e.g. 10.0.0.0/8)") from exc
    return tuple(networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is not to be reached (a short class name), or None for a public address."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        why = refusal(inner)
        return None if why is None else f"{why}, IPv6 form"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True)
class NetPolicy:
    """Which addresses may be reached: the public ones, and those in `allow`."""

    allow: tuple[IPNetwork, ...] = ()
    setting: str = WEBHOOK_ALLOW_ENV

    def check(self, ip: IPAddress) -> str | None:
        """None when `ip` may be reached; else why not."""
        if any(ip.version == net.version and ip in net for net in self.allow):
            return None
        return refusal(ip)

    def vet(self, host: str, port: int, *, what: str) -> IPAddress:
        """The first address of `host` that may be reached: the one to connect to.

        AddressRefusedError (naming the classes, not the addresses) when none may;
        HostNotResolvedError when the name does not resolve.
        """
        refused = []
        for ip in resolve(host, port):
            why = self.check(ip)
            if why is None:
                return ip
            refused.append(why)
        raise AddressRefusedError(
            f"{what} {host!r} resolves to an address that is not allowed "
            f"({', '.join(sorted(set(refused)))}); an operator may allow its network "
            f"in {self.setting}"
        )


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` resolves to (an IP literal is itself), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostNotResolvedError(f"host {host!r} cannot be resolved") from exc
    found: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        if ip not in found:
            found.append(ip)
    if not found:
        raise HostNotResolvedError(f"host {host!r} has no address")
    return found


def webhook_policy(settings: NetPolicySettings | None = None) -> NetPolicy:
    """The webhook policy: public addresses and MAILINTAKE_WEBHOOK_ALLOW_NETWORKS."""
    settings = settings or NetPolicySettings()
    allow = parse_networks(settings.webhook_allow_networks, setting=WEBHOOK_ALLOW_ENV)
    return NetPolicy(allow, WEBHOOK_ALLOW_ENV)


def mailbox_policy(settings: NetPolicySettings | None = None) -> NetPolicy | None:
    """The mailbox policy when MAILINTAKE_MAILBOX_DENY_PRIVATE is set, else None (any host)."""
    settings = settings or NetPolicySettings()
    if not settings.mailbox_deny_private:
        return None
    allow = parse_networks(settings.mailbox_allow_networks, setting=MAILBOX_ALLOW_ENV)
    return NetPolicy(allow, MAILBOX_ALLOW_ENV)


@lru_cache(maxsize=1)
def _process_mailbox_policy() -> NetPolicy | None:
    return mailbox_policy()


def check_mailbox_host(host: str, port: int) -> str | None:
    """Before a mailbox connection: refuse an inside address when the operator asked for it.

    Returns the address that was checked, for the connection to go to (so that a second
    lookup cannot lead elsewhere), or None when no check is asked for (connect by name).
    MailboxRejectedError (`address_refused`) puts the account in error with the reason;
    a name that does not resolve is MailboxUnavailableError (retried).
    """
    policy = _process_mailbox_policy()
    if policy is None:
        return None
    try:
        return str(policy.vet(host, port, what="mailbox host"))
    except AddressRefusedError as exc:
        raise MailboxRejectedError("address_refused", str(exc)) from exc
    except HostNotResolvedError as exc:
        raise MailboxUnavailableError("dns_failed", str(exc)) from exc
