"""The assignment rule on its own: the tiers, who is next, and even shares whatever happens."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assigner.rules import Manager, eligible, next_manager, next_turns

STATUSES = ("free", "lunch", "busy", "break")


def group(*spec: str) -> list[Manager]:
    """Managers m1, m2, … from specs like "free", "busy", "free/off" (not logged in)."""
    return [
        Manager(f"m{n}", s.removesuffix("/off"), not s.endswith("/off"))
        for n, s in enumerate(spec, start=1)
    ]


@pytest.mark.parametrize(
    ("spec", "tier"),
    [
        (("free", "busy", "free"), ["m1", "m3"]),
        (("busy", "free/off", "lunch"), ["m1", "m2", "m3"]),  # nobody free and logged in
        (("free/off", "break"), ["m1", "m2"]),
        (("lunch", "free", "break", "free/off"), ["m2"]),
        (("busy",), ["m1"]),
        ((), []),
    ],
    ids=["free-first", "nobody-free", "logged-out", "one-free", "one-busy", "empty"],
)
def test_the_eligible_tier(spec: tuple[str, ...], tier: list[str]) -> None:
    assert [m.id for m in eligible(group(*spec))] == tier


@pytest.mark.parametrize(
    ("spec", "last", "expected"),
    [
        (("free", "free", "free"), {}, "m1"),  # nobody assigned yet: the first listed
        (("free", "free", "free"), {"m1": 1}, "m2"),  # never assigned before anyone
        (("free", "free", "free"), {"m1": 4, "m2": 2, "m3": 3}, "m2"),  # least recent
        (("free/off", "lunch", "break"), {"m1": 1}, "m2"),
        (("free/off", "lunch", "break"), {"m1": 1, "m2": 2, "m3": 3}, "m1"),
        (("busy", "free"), {"m1": 1, "m2": 9}, "m2"),  # the free one, however recent
        (("busy", "busy"), {"m1": 5, "m2": 1}, "m2"),
        ((), {}, None),
    ],
)
def test_who_is_next(spec: tuple[str, ...], last: dict[str, int], expected: str | None) -> None:
    assert next_manager(group(*spec), last) == expected


def test_the_next_turns_are_each_decided_on_the_history_before_them() -> None:
    managers = group("free", "free", "busy")
    assert next_turns(managers, {"m1": 7}, range(8, 13)) == ["m2", "m1", "m2", "m1", "m2"]
    assert next_turns([], {}, range(1, 3)) == []


managers_st = st.lists(st.tuples(st.sampled_from(STATUSES), st.booleans()), min_size=1, max_size=6)
# A step of the history: a manager's status (index, status, online), or one assignment (None).
step_st = st.one_of(
    st.none(), st.tuples(st.integers(0, 5), st.sampled_from(STATUSES), st.booleans())
)


@settings(max_examples=300, deadline=None)
@given(
    start=managers_st,
    history=st.lists(step_st, max_size=60),
    then=managers_st,
    count=st.integers(0, 90),
)
def test_each_eligible_manager_gets_n_over_k_within_one_whatever_came_before(
    start: list[tuple[str, bool]],
    history: list[tuple[int, str, bool] | None],
    then: list[tuple[str, bool]],
    count: int,
) -> None:
    """After any history of status changes and assignments, N customers in a row among k
    eligible managers give each N/k ± 1, and nobody outside the tier gets one."""
    managers = [Manager(f"m{i}", s, o) for i, (s, o) in enumerate(start)]
    last: dict[str, int] = {}
    turn = 0
    for step in history:
        if step is None:
            turn += 1
            last[str(next_manager(managers, last))] = turn
        elif step[0] < len(managers):
            managers[step[0]] = Manager(f"m{step[0]}", step[1], step[2])
    managers = [Manager(f"m{i}", s, o) for i, (s, o) in enumerate(then)]
    got = Counter(next_turns(managers, last, range(turn + 1, turn + 1 + count)))
    tier = {m.id for m in eligible(managers)}
    assert set(got) <= tier
    k = len(tier)
    assert all(count // k <= got[m] <= -(-count // k) for m in tier), got
