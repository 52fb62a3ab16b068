"""Fetch batches bounded by bytes: the sizes the server reported decide how many bodies one
FETCH asks for, so a replica's memory follows its byte budget, not a count of messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fetcher.ports import MessageMeta

DEFAULT_BUDGET = 16 * 1024 * 1024
# What fetching an oversize message costs: its header only.
HEADER_COST = 64 * 1024


def cost(size: int, *, max_bytes: int) -> int:
    """The bytes a message's fetch brings: its body, or for one over the limit its header."""
    return size if size <= max_bytes else min(size, HEADER_COST)


def plan_groups(
    metas: Sequence[MessageMeta],
    *,
    budget: int,
    max_bytes: int,
    alone: Callable[[MessageMeta], bool] = lambda _m: False,
) -> list[list[MessageMeta]]:
    """Consecutive messages whose bodies together stay within `budget`; a message larger
    than the budget, or one to be fetched `alone`, is a group of its own."""
    groups: list[list[MessageMeta]] = []
    group: list[MessageMeta] = []
    used = 0
    for meta in metas:
        size = cost(meta.size, max_bytes=max_bytes)
        single = alone(meta) or size > budget
        if group and (single or used + size > budget):
            groups.append(group)
            group, used = [], 0
        if single:
            groups.append([meta])
            continue
        group.append(meta)
        used += size
    if group:
        groups.append(group)
    return groups
