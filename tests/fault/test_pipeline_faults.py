"""Faults with a mixed stream in flight: afterwards nothing is lost and nothing is done twice.

Each scenario plays MAILINTAKE_FAULT_MAILS mails (default 2,000) from three Dovecot accounts
through the four stages as real processes, injects one fault while they are in flight, lets
the pipeline recover and checks every invariant (tests/fault/invariants.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from shared.store import CRASH_MID_WRITE_ENV
from tests.fault.conftest import TENANT, FaultRow, World
from tests.fault.invariants import check, dead_letters, done_mails, recorded, settled
from tests.processes import wait_until
from tests.services import service_ctl

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(420)]

STAGES = ("fetcher", "binder", "assigner", "notifier")
Trigger = Literal["fetching", "flowing", "start"]


@dataclass(frozen=True)
class Fault:
    """A fault, the moment it strikes, and the environment it needs."""

    name: str
    trigger: Trigger
    inject: Callable[[World], None]
    env: dict[str, str] = field(default_factory=dict)
    # (stage, collection): that stage sends half of its first bulk write of two or more
    # statements to the collection, then kills itself (shared/store.py's test hook)
    crash_mid_write: tuple[str, str] | None = None


def kill_and_restart(stage: str) -> Callable[[World], None]:
    def inject(world: World) -> None:
        world.stages.kill(stage)
        world.stages.start(stage)

    return inject


def stop_and_start(service: str) -> Callable[[World], None]:
    def inject(_world: World) -> None:
        try:
            service_ctl(service, "stop")
        finally:
            service_ctl(service, "start")

    return inject


def restart(service: str) -> Callable[[World], None]:
    def inject(_world: World) -> None:
        service_ctl(service, "restart")

    return inject


def crash_and_restart(stage: str) -> Callable[[World], None]:
    """Once `stage` has killed itself by the store's test hook, start it again."""

    def inject(world: World) -> None:
        wait_until(
            lambda: crash_marker(world).exists() and not world.stages.alive()[stage],
            timeout=120,
            what=f"the {stage} to crash in the middle of a bulk write",
            on_timeout=world.stages.logs,
        )
        world.stages.start(stage)

    return inject


def crash_marker(world: World) -> Path:
    """The file the store's hook creates: one crash per scenario, not one per process."""
    return world.stages.log_dir / "crashed-mid-write"


FAULTS = [
    Fault("kill -9 fetcher", "fetching", kill_and_restart("fetcher")),
    Fault("kill -9 binder", "flowing", kill_and_restart("binder")),
    Fault("kill -9 assigner", "flowing", kill_and_restart("assigner")),
    Fault("kill -9 notifier", "flowing", kill_and_restart("notifier")),
    Fault("rabbitmq stop/start", "flowing", stop_and_start("rabbitmq")),
    Fault("store stop/start", "flowing", stop_and_start("ferretdb")),
    Fault("dovecot restart", "fetching", restart("dovecot")),
    Fault(
        "every event twice",
        "start",
        lambda _world: None,
        {"MAILINTAKE_TEST_DUPLICATE_PUBLISH": "1"},
    ),
    Fault(
        "binder dies mid insert",
        "start",
        crash_and_restart("binder"),
        crash_mid_write=("binder", "emails"),
    ),
    Fault(
        "assigner dies mid update",
        "start",
        crash_and_restart("assigner"),
        crash_mid_write=("assigner", "customers"),
    ),
]


def fetched(world: World) -> int:
    """Mails the fetcher has published so far (its progress over all accounts)."""
    docs = world.store.accounts.find({"tenant_id": TENANT}, {"progress": 1})
    return sum(int((d.get("progress") or {}).get("done", 0)) for d in docs)


def wait_for(world: World, trigger: Trigger) -> None:
    """Until the first load is under way ("fetching") or a fifth is bound ("flowing")."""
    total = len(world.stream.mails)
    if trigger == "start":
        return
    progress, share = (fetched, 20) if trigger == "fetching" else (recorded, 5)
    wait_until(
        lambda: progress(world) >= total // share,
        timeout=120,
        what=f"the stream {trigger}",
        on_timeout=world.stages.logs,
    )


def converge(world: World, timeout: float) -> bool:
    try:
        wait_until(lambda: settled(world), timeout=timeout, what="the pipeline to settle")
    except AssertionError:
        return False
    return not dead_letters(world)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name.replace(" ", "-"))
def test_a_fault_in_flight_loses_nothing_and_does_nothing_twice(
    fault: Fault, world: World, fault_rows: list[FaultRow]
) -> None:
    total = len(world.stream.mails)
    row = FaultRow(fault.name, total, total, total, 0, None, False)
    fault_rows.append(row)  # replaced below; stays (as all lost) if the scenario breaks off
    world.stages.env.update(fault.env)
    if fault.crash_mid_write:
        stage, collection = fault.crash_mid_write
        hook = f"{collection}:{crash_marker(world)}"
        world.stages.stage_env[stage] = {CRASH_MID_WRITE_ENV: hook}
    world.stages.start(*STAGES)
    wait_for(world, fault.trigger)
    in_flight, loaded = total - done_mails(world), fetched(world)
    fault.inject(world)
    healed = time.monotonic()
    if fault.crash_mid_write:  # it struck when the stage killed itself, inside inject
        in_flight = total - done_mails(world)
    converged = converge(world, timeout=240)
    recovery = time.monotonic() - healed if converged else None
    verdict = check(world)
    ok = converged and not verdict.problems and all(world.stages.alive().values())
    fault_rows[-1] = FaultRow(
        fault.name, total, in_flight, verdict.lost, verdict.duplicated, recovery, ok
    )
    if fault.trigger == "fetching":
        assert loaded < total, f"{fault.name}: the first load was over before the fault struck"
    assert converged, f"{fault.name}: the pipeline did not settle\n{world.stages.logs()}"
    assert not verdict.problems, "\n".join(verdict.problems[:30])
    assert all(world.stages.alive().values()), world.stages.alive()


def test_the_invariant_check_counts_lost_and_duplicated_mail(world: World) -> None:
    """The check itself: with no stage run everything is lost; a second record is a duplicate."""
    nothing_ran = check(world)
    assert nothing_ran.lost >= len(world.stream.mails)
    assert any("known unread, not read" in p for p in nothing_ran.problems)
    assert any("known unread, not gone" in p for p in nothing_ran.problems)
    first = world.stream.mails[1]
    copies = [{"_id": f"x{i}", "tenant_id": TENANT, "subject": first.subject} for i in (1, 2)]
    world.store.emails.insert_many(copies)
    assert check(world).duplicated == 1
