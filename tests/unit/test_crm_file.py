"""The CRM import file is checked whole: one line per bad value, ids that match only themselves."""

from __future__ import annotations

from typing import Any

import pytest

from ops.crm import SHOWN_ERRORS, Customer, Manager, Order, parse, prepare
from ops.output import UserError


def problems(data: Any) -> list[str]:
    with pytest.raises(UserError) as caught:
        parse(data)
    head, *lines = str(caught.value).splitlines()
    assert head.endswith("nothing imported:") or not lines
    return [line.strip() for line in lines] or [head]


def test_a_top_level_list_is_refused_by_what_it_is() -> None:
    assert problems([{"tenant_id": "t"}]) == ["the file must hold one JSON object, not a list"]


def test_an_operator_as_an_id_is_refused() -> None:
    found = problems({"tenant_id": "t", "customers": [{"_id": {"$gt": ""}, "emails": []}]})
    assert 'customers[0]._id: expected a string or an integer, got an object {"$gt": ""}' in found
    assert "customers[0]._id.$gt: field names may not start with $ or contain a dot" in found


def test_a_string_where_a_list_of_addresses_belongs_is_refused() -> None:
    found = problems({"tenant_id": "t", "customers": [{"_id": "c1", "emails": "x@y.example"}]})
    assert found == ['customers[0].emails: expected a list, got a string "x@y.example"']


def test_every_bad_value_gets_its_own_line() -> None:
    found = problems(
        {
            "tenant_id": "t",
            "customers": [{"_id": "c1", "emails": ["a@b.example"]}, {"emails": []}],
            "orders": [{"_id": "o1", "number": True, "customer_id": "c1"}],
            "managers": [{"_id": "m1", "name": "M", "status": "away"}],
            "manager_groups": [{"_id": "g", "manager_ids": [None]}],
        }
    )
    assert found == [
        "customers[1]._id: missing",
        "orders[0].number: expected a string or an integer, got a boolean true",
        'managers[0].status: expected one of free, lunch, busy, break, got a string "away"',
        "manager_groups[0].manager_ids[0]: expected a string or an integer, got null",
    ]


def test_an_unknown_key_or_operator_field_anywhere_is_refused() -> None:
    found = problems(
        {
            "tenant_id": "t",
            "customer": [],
            "managers": [{"_id": "m", "name": "M", "x": {"$where": 1}}],
        }
    )
    assert (
        "customer: unknown key (the file holds customers, orders, managers, manager_groups, "
        "tenant_id)" in found
    )
    assert "managers[0].x.$where: field names may not start with $ or contain a dot" in found


def test_addresses_that_are_not_addresses_and_foreign_tenant_ids_are_named() -> None:
    found = problems(
        {
            "tenant_id": "t",
            "customers": [{"_id": "c1", "emails": ["ok@x.example", "nope"], "tenant_id": "u"}],
        }
    )
    assert found == [
        'customers[0].emails[1]: not an e-mail address, got "nope"',
        "customers[0].tenant_id: the file is tenant t's, got 'u'",
    ]


def test_a_long_list_of_problems_is_cut_and_counted() -> None:
    bad = [{"_id": f"c{n}", "emails": "x"} for n in range(SHOWN_ERRORS + 5)]
    found = problems({"tenant_id": "t", "customers": bad})
    assert len(found) == SHOWN_ERRORS + 1 and found[-1] == "... and 5 more"


def test_documents_are_stored_normalised_with_their_other_fields_kept() -> None:
    crm = parse(
        {
            "tenant_id": "t",
            "customers": [{"_id": 7, "emails": [" Anna@X.Example ", "anna@x.example"], "vip": 1}],
            "orders": [{"_id": "o", "number": 3112, "customer_id": 7}],
            "managers": [{"_id": "m", "name": "M"}],
        }
    )
    customer = prepare("customers", crm.customers[0], "t")
    assert isinstance(crm.customers[0], Customer)
    assert customer["_id"] == 7 and customer["emails"] == ["anna@x.example"]
    assert customer["vip"] == 1 and customer["manager_id"] is None and customer["tenant_id"] == "t"
    assert "shop_id" not in customer
    assert isinstance(crm.orders[0], Order)
    assert prepare("orders", crm.orders[0], "t")["number"] == "3112"
    assert isinstance(crm.managers[0], Manager)
    manager = prepare("managers", crm.managers[0], "t")
    assert (manager["status"], manager["online"]) == ("free", True)
