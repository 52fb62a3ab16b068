"""The assigner trusts no event: the mail, its account and customer are the store's."""

from __future__ import annotations

from typing import Any

import pytest

from assigner.__main__ import AssignerHandler
from assigner.ports import StoredBinding
from assigner.trust import trusted
from shared.contracts import AccountOptions, MailBound, MailRouted
from shared.errors import UnknownAccountError, UntrustedEventError
from shared.wire import H_ERROR, H_ERROR_CLASS
from tests.fakes import (
    FakeAssignmentBatch,
    FakeBoundMailDirectory,
    FakeManagerRotation,
)
from tests.unit.test_assigner_notifier import bound, managers
from tests.unit.test_unit_of_work import delivered, published, run_batch

STORED = AccountOptions(owner_id="owner", manager_group_id="g1", notify_manager=True)


def stored(*events: MailBound, options: AccountOptions = STORED) -> FakeBoundMailDirectory:
    """The store holding what `events` name, the account with `options`."""
    bindings = FakeBoundMailDirectory()
    for e in events:
        bindings.accounts[(e.tenant_id, e.account_id)] = options
    bindings.store(*events)
    return bindings


def forged(event: MailBound, **fields: Any) -> MailBound:
    return event.model_copy(update=fields)


def test_the_group_notify_manager_and_owner_are_the_accounts_as_stored() -> None:
    event = forged(
        bound(1),
        options=AccountOptions(owner_id="mallory", manager_group_id="g-evil", notify_manager=False),
    )
    assert trusted(event, bindings=stored(bound(1))).options == STORED


def test_an_event_from_before_the_options_changed_gets_the_new_ones() -> None:
    old = bound(1, group="g-old")
    now = AccountOptions(owner_id="new-owner", manager_group_id="g-new")
    assert trusted(old, bindings=stored(old, options=now)).options == now


def test_whether_the_customer_was_created_is_the_e_mails_word() -> None:
    """A mail bound to an existing customer cannot pass for one that created it."""
    bindings = stored(bound(1, created=False))
    got = trusted(forged(bound(1, created=False), customer_created=True), bindings=bindings)
    assert (got.customer_created, got.matched_by) == (False, "sender")
    claimed = forged(bound(1, created=False), matched_by="created", customer_created=True)
    assert not trusted(claimed, bindings=bindings).customer_created


def test_the_order_and_its_manager_are_the_e_mails() -> None:
    bindings = stored(bound(1, created=False, manager="m-order"))
    got = trusted(forged(bound(1, created=False), manager_id="m-evil"), bindings=bindings)
    assert got.manager_id == "m-order"


def test_an_account_of_another_tenant_is_refused() -> None:
    bindings = stored(bound(1))
    event = forged(bound(1), tenant_id="other")
    bindings.bindings[("other", "e1")] = bindings.bindings[("t", "e1")]
    bindings.customers.add(("other", "c1"))
    with pytest.raises(UnknownAccountError, match="'a' is not an account of tenant 'other'"):
        trusted(event, bindings=bindings)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"email_id": "e-elsewhere"}, "e-mail 'e-elsewhere' is not one of tenant 't'"),
        ({"customer_id": "c2"}, "e-mail 'e1' of tenant 't' is bound to customer 'c1', not 'c2'"),
        ({"account_id": "a2"}, "e-mail 'e1' of tenant 't' came from account 'a', not 'a2'"),
    ],
    ids=["another-tenants-email", "another-customer", "another-account"],
)
def test_a_mail_the_store_does_not_have_so_is_refused_with_the_reason(
    change: dict[str, str], why: str
) -> None:
    bindings = stored(bound(1), bound(2))  # c2 and its mail e2 exist in the tenant
    bindings.bindings[("other", "e-elsewhere")] = bindings.bindings[("t", "e1")]
    bindings.accounts[("t", "a2")] = STORED
    with pytest.raises(UntrustedEventError) as raised:
        trusted(forged(bound(1), **change), bindings=bindings)
    assert str(raised.value) == why


def test_a_mail_that_is_not_bound_or_a_customer_the_tenant_lacks_is_refused() -> None:
    bindings = stored(bound(1))
    bindings.bindings[("t", "e1")] = StoredBinding("a", "skipped", None, None)
    with pytest.raises(UntrustedEventError, match="is not bound \\(its status is 'skipped'\\)"):
        trusted(bound(1), bindings=bindings)
    bindings = stored(bound(1))
    bindings.customers.clear()
    with pytest.raises(UntrustedEventError, match="customer 'c1' is not one of tenant 't'"):
        trusted(bound(1), bindings=bindings)


def test_a_forged_event_in_a_batch_is_dead_lettered_and_takes_nobodys_turn() -> None:
    """The others of its batch are assigned in turn, as if it had never come."""
    rotation = FakeManagerRotation({"g1": managers(("m1", "free", True), ("m2", "free", True))})
    batch = FakeAssignmentBatch(rotation=rotation, store_named=False)
    batch.bindings = stored(bound(1), bound(2), bound(3))
    bindings = batch.bindings.bindings
    bindings[("t", "e2")] = StoredBinding("a", "bound", "sender", "c-other")
    messages = [delivered("assigner", bound(n)) for n in (1, 2, 3)]
    outputs = run_batch("assigner", AssignerHandler(batch), batch, messages)
    [dead] = [o for o in outputs if o.routing_key == "mi.assigner.in.dlq"]
    assert dead.headers is not None and dead.headers[H_ERROR_CLASS] == "UntrustedEventError"
    assert "is bound to customer 'c-other', not 'c2'" in str(dead.headers[H_ERROR])
    routed = published([o for o in outputs if o is not dead])
    assert [(r.customer_id, r.manager_id) for r in routed] == [("c1", "m1"), ("c3", "m2")]
    assert all(isinstance(r, MailRouted) for r in routed)
    assert rotation.assigned == {"c1": "m1", "c3": "m2"}
    assert set(batch.records.outcomes) == {"e1", "e3"}


def test_a_forged_group_in_a_batch_is_ignored_for_the_accounts() -> None:
    rotation = FakeManagerRotation(
        {"g1": managers(("m1", "free", True)), "g-evil": managers(("m-evil", "free", True))}
    )
    batch = FakeAssignmentBatch(rotation=rotation, store_named=False)
    batch.bindings = stored(bound(1))
    event = forged(bound(1), options=AccountOptions(owner_id="mallory", manager_group_id="g-evil"))
    [out] = published(
        run_batch("assigner", AssignerHandler(batch), batch, [delivered("assigner", event)])
    )
    assert (out.manager_id, out.options) == ("m1", STORED)
