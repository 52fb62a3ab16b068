"""Process settings, read once from the environment (prefix MAILINTAKE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
# No mail above this is fetched whole: parsing one takes a few times its size in memory.
MAX_MESSAGE_BYTES_CEILING = 100 * MiB


def check_max_message_bytes(value: int) -> int:
    """`value` if it is at most the ceiling; a ValueError naming both if not."""
    if value > MAX_MESSAGE_BYTES_CEILING:
        raise ValueError(
            f"max_message_bytes {value} is over the ceiling of {MAX_MESSAGE_BYTES_CEILING} "
            "bytes (100 MiB)"
        )
    return value


class Settings(BaseSettings):
    """Everything a mailintake process needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_", extra="ignore", frozen=True)

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    mongo_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017/mailintake")
    secret_key: SecretStr | None = None
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    namespace: str = Field(default="mailintake", pattern=r"^[a-z][a-z0-9_.-]{0,40}$")
    prefetch: int = Field(default=300, ge=1, le=10_000)
    delivery_limit: int = Field(default=5, ge=1, le=100)
    max_retries: int = Field(default=8, ge=0, le=50)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # A mail up to this size travels inline (the AMQP body); a larger one is stored once in
    # the blob store and its event carries the reference.
    inline_body_limit: int = Field(default=256 * 1024, ge=1024)
    # What a consumer may hold of delivered, unacked messages: prefetch x inline_body_limit.
    prefetch_budget_bytes: int = Field(default=128 * MiB, ge=MiB)
    # A consumed batch's unit of work is cut before the mail that would take it past this
    # (a mail's size counts, inline or by reference; a larger mail is a batch of its own).
    batch_max_bytes: int = Field(default=64 * MiB, ge=MiB)
    max_message_bytes: int = Field(default=25 * MiB, ge=1024)
    # What one mail may store of its parts (attachments, inline images); the rest is listed
    # on its `emails` document as not stored.
    max_parts: int = Field(default=100, ge=1, le=10_000)
    max_parts_bytes: int = Field(default=50 * MiB, ge=1024)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = (
        "0.0.0.0"  # where /metrics, /healthz, /readyz listen (127.0.0.1: local only)
    )
    lease_seconds: float = Field(default=30.0, gt=0)
    rabbitmq_management_url: SecretStr | None = None
    # Days a loaded mail's raw source is kept (`mailintake emails prune-raw`); None: forever.
    raw_retention_days: int | None = Field(default=None, ge=0)

    # A stage's own broker user (MAILINTAKE_AMQP_URL_<STAGE>), else amqp_url: see stage_amqp_url.
    amqp_url_fetcher: SecretStr | None = None
    amqp_url_binder: SecretStr | None = None
    amqp_url_assigner: SecretStr | None = None
    amqp_url_notifier: SecretStr | None = None

    def stage_amqp_url(self, stage: str) -> str:
        """The AMQP URL `stage` connects with: its own user's if set, else amqp_url."""
        own = getattr(self, f"amqp_url_{stage}", None)
        return (own or self.amqp_url).get_secret_value()

    _max_message_bytes = field_validator("max_message_bytes")(check_max_message_bytes)

    @model_validator(mode="after")
    def _check_prefetch_budget(self) -> Settings:
        held = self.prefetch * self.inline_body_limit
        if held > self.prefetch_budget_bytes:
            raise ValueError(
                f"MAILINTAKE_PREFETCH ({self.prefetch}) x MAILINTAKE_INLINE_BODY_LIMIT "
                f"({self.inline_body_limit}) = {held} bytes is over "
                f"MAILINTAKE_PREFETCH_BUDGET_BYTES ({self.prefetch_budget_bytes}): "
                "lower the prefetch or the inline limit, or raise the budget"
            )
        return self

    @property
    def mongo_database(self) -> str:
        """The database named in the URL's path, else `mailintake`."""
        from pymongo.uri_parser import parse_uri

        return parse_uri(self.mongo_url.get_secret_value()).get("database") or "mailintake"
