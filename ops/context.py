"""What every command may need, opened only when it is used."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pydantic import ValidationError

from ops.output import UserError
from shared.crypto import SecretBox
from shared.errors import StoreUnavailableError
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology


@dataclass
class Context:
    """Settings, store and secrets for one command run."""

    settings: Settings = field(default_factory=lambda: load_settings())

    @cached_property
    def store(self) -> Store:
        store = Store(
            self.settings.mongo_url.get_secret_value(),
            self.settings.mongo_database,
            timeout_ms=3000,
        )
        try:
            store.ping()
        except StoreUnavailableError as exc:
            short = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0]
            raise StoreUnavailableError(f"the store is down: {short}") from exc
        return store

    @cached_property
    def topology(self) -> Topology:
        return Topology(self.settings.namespace, self.settings.delivery_limit)

    @cached_property
    def broker(self) -> Broker:
        """A connected broker; BrokerUnavailableError (naming the address) if it is down."""
        broker = Broker(
            self.settings.amqp_url.get_secret_value(), self.topology, connect_timeout=3.0
        )
        broker.connect()
        return broker

    def close(self) -> None:
        """Close whatever this run opened."""
        if "broker" in self.__dict__:
            self.broker.close()
        if "store" in self.__dict__:
            self.store.close()

    @cached_property
    def secrets(self) -> SecretBox:
        if self.settings.secret_key is None:
            raise UserError("MAILINTAKE_SECRET_KEY is not set (a Fernet key, see README)")
        return SecretBox(self.settings.secret_key.get_secret_value())


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "MAILINTAKE_" + str(first["loc"][0]).upper() if first["loc"] else "MAILINTAKE_*"
        raise UserError(f"{name}: {first['msg']}") from exc
