"""The names and shape of mailintake's exchange and queues (plain data, no pika)."""

from __future__ import annotations

from dataclasses import dataclass

STAGE_BINDINGS: dict[str, tuple[str, ...]] = {
    "binder": ("mail.fetched.*",),
    "assigner": ("mail.bound",),
    "notifier": ("mail.routed", "mail.skipped", "account.failed", "account.warning"),
    "webhook": ("notification.created",),
}


@dataclass(frozen=True)
class Topology:
    """The events exchange and the failures exchange (both topic); per stage a quorum work
    queue with its `.retry` and `.dlq`."""

    namespace: str = "mailintake"
    delivery_limit: int = 10

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def failures_exchange(self) -> str:
        """`<namespace>.failures`: where a stage sends a failed message, to its own `.retry`
        or `.dlq` (each bound by its own name), so that no stage needs the default exchange,
        which reaches every queue by name."""
        return f"{self.namespace}.failures"

    def failure_queues(self, stage: str) -> tuple[str, str]:
        """The `.retry` and `.dlq` of `stage`'s work queue (their names are their routing keys
        on the failures exchange)."""
        queue = self.work_queue(stage)
        return self.retry_queue(queue), self.dead_letter_queue(queue)

    def work_queue(self, stage: str) -> str:
        """`<namespace>.<stage>.in`, e.g. mailintake.binder.in."""
        if stage not in STAGE_BINDINGS:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGE_BINDINGS)}")
        return f"{self.namespace}.{stage}.in"

    def work_queues(self) -> list[str]:
        return [self.work_queue(stage) for stage in STAGE_BINDINGS]

    def resolve(self, name: str) -> str:
        """A queue from a short name (`binder`, `binder.in`) or a full one."""
        short = name.removeprefix(f"{self.namespace}.")
        stage = short.split(".")[0]
        base = self.work_queue(stage)
        for suffix in ("", ".retry", ".dlq"):
            if short in (f"{stage}.in{suffix}", f"{stage}{suffix}"):
                return base + suffix
        raise ValueError(f"unknown queue {name!r}; one of {', '.join(self.all_queues())}")

    def all_queues(self) -> list[str]:
        return [q + s for q in self.work_queues() for s in ("", ".retry", ".dlq")]

    @staticmethod
    def retry_queue(queue: str) -> str:
        return f"{queue}.retry"

    @staticmethod
    def dead_letter_queue(queue: str) -> str:
        return f"{queue}.dlq"
