"""The binder's view of the tenants' mail accounts, on MongoDB: their addresses and options."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from binder.ports import AccountRef
from shared.contracts import AccountOptions
from shared.mail import normalize_address
from shared.store import Doc, Store, store_errors

_ADDRESS_FIELDS = {"tenant_id": 1, "username": 1, "address": 1}
_OPTION_FIELDS = {"tenant_id": 1, **{name: 1 for name in AccountOptions.model_fields}}


def _addresses_of(account: Doc) -> set[str]:
    """An account's own addresses: its username, and its address where it has one."""
    values = (account.get("username"), account.get("address"))
    return {a for v in values if isinstance(v, str) and (a := normalize_address(v))}


class MongoAccountDirectory:
    """The tenants' mail accounts (every query filters on the tenant).

    `warm` reads the addresses of a batch's tenants' accounts with one query; until the next
    `warm`, a tenant's addresses are read once. `warm_accounts` reads the accounts a batch's
    events name with one query; until the next, `find` answers those from what it read. A
    read that failed leaves nothing known: `find` then reads for itself (and fails as the
    store does), so a store that is away never makes an account look unknown.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._addresses: dict[str, frozenset[str]] = {}
        self._accounts: dict[tuple[str, str], AccountRef | None] = {}

    def warm_accounts(self, named: Iterable[tuple[str, str]]) -> None:
        """Read the accounts of these (tenant, account id) pairs: one query, on the tenants."""
        pairs = set(named)
        self._accounts = {}  # until the read succeeds, `find` reads each account itself
        if not pairs:
            return
        query = {
            "tenant_id": {"$in": sorted({t for t, _ in pairs})},
            "_id": {"$in": sorted({a for _, a in pairs})},
        }
        found: dict[tuple[str, str], AccountRef | None] = dict.fromkeys(pairs)
        with store_errors("read the batch's accounts"):
            for doc in self._store.accounts.find(query, _OPTION_FIELDS):
                key = (doc["tenant_id"], str(doc["_id"]))
                if key in pairs:
                    found[key] = _account(doc)
        self._accounts = found  # only now is an account not found known to be unknown

    def warm(self, tenant_ids: Iterable[str]) -> None:
        tenants = sorted(set(tenant_ids))
        found: dict[str, set[str]] = {tenant: set() for tenant in tenants}
        if tenants:
            query = {"tenant_id": {"$in": tenants}}
            with store_errors("read the batch's accounts"):
                for doc in self._store.accounts.find(query, _ADDRESS_FIELDS):
                    found[doc["tenant_id"]] |= _addresses_of(doc)
        self._addresses = {tenant: frozenset(addresses) for tenant, addresses in found.items()}

    def own_addresses(self, tenant_id: str) -> frozenset[str]:
        if tenant_id not in self._addresses:
            with store_errors("read the tenant's accounts"):
                docs = self._store.accounts.find({"tenant_id": tenant_id}, _ADDRESS_FIELDS)
                addresses = {a for doc in docs for a in _addresses_of(doc)}
            self._addresses[tenant_id] = frozenset(addresses)
        return self._addresses[tenant_id]

    def find(self, tenant_id: str, account_id: str) -> AccountRef | None:
        if (tenant_id, account_id) in self._accounts:
            return self._accounts[(tenant_id, account_id)]
        with store_errors("read account"):
            doc = self._store.accounts.find_one(
                {"_id": account_id, "tenant_id": tenant_id}, _OPTION_FIELDS
            )
        return None if doc is None else _account(doc)


def _account(doc: dict[str, Any]) -> AccountRef:
    return AccountRef(str(doc["_id"]), doc["tenant_id"], AccountOptions.model_validate(doc))
