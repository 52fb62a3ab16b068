"""The broker rules as data: no stage writes to the default exchange; failures stay its own."""

from __future__ import annotations

import re

import pytest

from shared.brokeraccess import USERS, failure_keys, topic_rules, topic_rules_lines, user

STAGES = ("binder", "assigner", "notifier")


@pytest.mark.parametrize("role", ["fetcher", *STAGES, "monitor"])
def test_no_stage_may_write_to_the_default_exchange(role: str) -> None:
    assert re.fullmatch(user(role).write, "amq.default") is None


@pytest.mark.parametrize("role", STAGES)
def test_a_consuming_stage_may_write_to_the_failures_exchange(role: str) -> None:
    assert re.fullmatch(user(role).write, "mailintake.failures")


@pytest.mark.parametrize(
    ("role", "key", "allowed"),
    [
        ("binder", "mailintake.binder.in.retry", True),
        ("binder", "mailintake.binder.in.dlq", True),
        ("binder", "mailintake.notifier.in.dlq", False),
        ("binder", "mailintake.binder.in", False),
        ("binder", "other.binder.in.dlq", False),
        ("notifier", "mailintake.webhook.in.retry", True),
        ("notifier", "mailintake.assigner.in.dlq", False),
        ("fetcher", "mailintake.binder.in.dlq", False),
        ("operator", "mailintake.binder.in.dlq", False),
    ],
)
def test_failure_keys_name_the_stages_own_queues(role: str, key: str, allowed: bool) -> None:
    [(_, events, _), (exchange, failures, _)] = topic_rules(user(role), "mailintake")
    assert exchange == "mailintake.failures"
    assert bool(re.fullmatch(failures, key)) is allowed
    assert re.fullmatch(events, key) is None


def test_a_namespace_with_a_dot_is_matched_literally() -> None:
    keys = failure_keys("a.b", ("binder",))
    assert re.fullmatch(keys, "a.b.binder.in.dlq")
    assert re.fullmatch(keys, "axb.binder.in.dlq") is None


def test_every_user_has_topic_rules_on_both_exchanges() -> None:
    lines = [line.split("\t") for line in topic_rules_lines("ns").splitlines()]
    assert len(lines) == 2 * len(USERS)
    assert {(name, exchange) for name, exchange, *_ in lines} == {
        (f"mailintake-{u.role}", e) for u in USERS for e in ("ns.events", "ns.failures")
    }


@pytest.mark.parametrize("role", ["fetcher", *STAGES, "operator"])
def test_rules_for_one_namespace_reach_its_exchanges_and_queues_only(role: str) -> None:
    pinned, anywhere = user(role, "mailintake"), user(role)
    names = [
        f"{ns}.{part}"
        for ns in ("mailintake", "mailintake.eu", "other")
        for part in ("events", "failures", "binder.in", "notifier.in.dlq")
    ]
    for kind in ("configure", "write", "read"):
        allowed = [n for n in names if re.fullmatch(getattr(pinned, kind), n)]
        assert not [n for n in allowed if n.startswith(("other.", "mailintake.eu."))]
        # within its namespace it may do what the rules for every namespace allow there
        mine = [
            n for n in names if n.startswith("mailintake.") and not n.startswith("mailintake.eu")
        ]
        assert allowed == [n for n in mine if re.fullmatch(getattr(anywhere, kind), n)]
