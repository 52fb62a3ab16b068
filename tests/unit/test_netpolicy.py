"""Which addresses webhooks and mailboxes may reach (shared/netpolicy.py)."""

from __future__ import annotations

import ipaddress

import pytest

from shared.errors import ConfigError
from shared.netpolicy import (
    AddressRefusedError,
    NetPolicy,
    NetPolicySettings,
    mailbox_policy,
    parse_networks,
    refusal,
    webhook_policy,
)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback, IPv6 form"),
        ("::ffff:169.254.169.254", "link-local, IPv6 form"),
        ("::ffff:10.0.0.1", "private, IPv6 form"),
        ("2002:7f00:1::", "loopback, IPv6 form"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local, IPv6 form"),  # NAT64 of 169.254.169.254
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:93.184.216.34", None),
    ],
)
def test_inside_addresses_are_refused_with_their_class_public_ones_pass(
    address: str, why: str | None
) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


def test_an_allow_listed_network_passes_and_only_it() -> None:
    policy = NetPolicy(parse_networks("127.0.0.1/32, 10.0.0.0/8", setting="X"))
    assert policy.check(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.check(ipaddress.ip_address("10.200.0.1")) is None
    assert policy.check(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.check(ipaddress.ip_address("169.254.169.254")) == "link-local"


def test_a_bad_network_is_a_config_error_naming_the_setting_and_value() -> None:
    with pytest.raises(ConfigError, match=r"MAILINTAKE_WEBHOOK_ALLOW_NETWORKS: 'ten' is not"):
        webhook_policy(NetPolicySettings(webhook_allow_networks="127.0.0.1/32,ten"))


def test_a_name_is_checked_by_what_it_resolves_to_and_the_refusal_names_no_address() -> None:
    with pytest.raises(AddressRefusedError, match="loopback") as refused:
        webhook_policy(NetPolicySettings()).vet("localhost", 443, what="webhook host")
    assert "127.0.0.1" not in str(refused.value) and "ALLOW_NETWORKS" in str(refused.value)
    allowed = webhook_policy(NetPolicySettings(webhook_allow_networks="127.0.0.1/32"))
    assert allowed.vet("localhost", 443, what="webhook host") == ipaddress.ip_address("127.0.0.1")


def test_mailbox_hosts_are_checked_only_when_the_operator_asks() -> None:
    assert mailbox_policy(NetPolicySettings()) is None
    policy = mailbox_policy(NetPolicySettings(mailbox_deny_private=True))
    assert policy is not None
    with pytest.raises(AddressRefusedError, match="MAILINTAKE_MAILBOX_ALLOW_NETWORKS"):
        policy.vet("127.0.0.1", 993, what="mailbox host")
