"""Who may do what on RabbitMQ: one user per stage, and the operator who declares the topology.

Plain data and the standard library only, so that the local set-up (`deploy/local/lib.sh`,
system Python) and the deploy set-up job read the same rules:

    python -m shared.brokeraccess rules             # the rules, one user a line (for lib.sh)
    python -m shared.brokeraccess topic-rules [NS]  # the topic rules, one user and exchange a line
    python -m shared.brokeraccess apply             # users and rules through the management API

`apply` (the set-up job of compose and k8s) grants each user its rules on one namespace's
exchanges and queues only (MAILINTAKE_NAMESPACE): a stage user cannot reach another namespace
of the same virtual host. `rules` (the local set-up) gives patterns that fit any namespace
(`<namespace>.binder.in`, ...), so that each test's namespace is held to the same rules as
production's. Topic rules (which routing keys a user may publish) are RabbitMQ's per exchange
*name*: they are granted per namespace, on its events and its failures exchange; an exchange
without them lets any user that may write to it publish any routing key, which is why `apply`
pins the rest to the namespace.

No stage may write to the default exchange (`amq.default`): it reaches every queue by its
name. A stage sends its failures through the failures exchange, whose topic rules name its own
`.retry` and `.dlq` only; the operator replays dead letters through the default exchange.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from shared.topology import STAGE_BINDINGS, Topology

# A namespace as Settings allows it (`^[a-z][a-z0-9_.-]{0,40}$`).
ANY_NAMESPACE = r"[a-z][a-z0-9_.-]*"
NOTHING = "^$"


def _keys(*keys: str) -> str:
    return rf"^({'|'.join(keys)})$"


@dataclass(frozen=True)
class BrokerUser:
    """One RabbitMQ user: its permission regexes on the virtual host and on the events topics.

    `configure` declares and deletes; `write` publishes (to an exchange) and binds (a queue);
    `read` consumes, gets and purges (a queue) and binds (an exchange). `topic_write` is
    matched against the routing key of every publish to the events exchange; `failures_of`
    are the stages whose `.retry` and `.dlq` it may send to through the failures exchange.
    """

    role: str
    configure: str
    write: str
    read: str
    topic_write: str = NOTHING
    topic_read: str = NOTHING
    failures_of: tuple[str, ...] = ()
    tags: str = ""

    @property
    def env(self) -> str:
        """The variable holding this user's AMQP URL, e.g. MAILINTAKE_AMQP_URL_BINDER."""
        return f"MAILINTAKE_AMQP_URL_{self.role.upper()}"


def users(namespace: str | None = None) -> tuple[BrokerUser, ...]:
    """Every user and its rules: on `namespace`'s exchanges and queues only, or (None) on those
    of any namespace."""
    ns = ANY_NAMESPACE if namespace is None else re.escape(namespace)
    events, failures = rf"{ns}\.events", rf"{ns}\.failures"
    any_queue = rf"{ns}\.({'|'.join(STAGE_BINDINGS)})\.in(\.retry|\.dlq)?"

    def consumer(stage: str, *publishes: str, queues: tuple[str, ...] = ()) -> BrokerUser:
        """A consuming stage: reads its own queues, publishes `publishes` on the events
        exchange and sends its failures to its own `.retry`/`.dlq` (failures exchange)."""
        return BrokerUser(
            role=stage,
            configure=NOTHING,
            write=rf"^({events}|{failures})$",
            read=rf"^{ns}\.({'|'.join(queues or (stage,))})\.in$",
            topic_write=_keys(*publishes),
            failures_of=queues or (stage,),
        )

    # Who declares the topology: the operator (`python -m shared.brokeraccess apply`, or any
    # process run as a user with `configure`). A stage without `configure` finds it declared.
    return (
        BrokerUser(
            role="fetcher",
            configure=NOTHING,
            write=rf"^{events}$",
            read=NOTHING,
            topic_write=_keys(r"mail\.fetched\..+", r"account\.failed", r"account\.warning"),
        ),
        consumer("binder", r"mail\.bound", r"mail\.routed", r"mail\.skipped"),
        consumer("assigner", r"mail\.routed"),
        # The webhook worker runs in the notifier's process: one user for both queues.
        consumer("notifier", r"notification\.created", queues=("notifier", "webhook")),
        BrokerUser(
            role="operator",
            configure=rf"^({events}|{failures}|{any_queue})$",
            # amq.default: the default ("") exchange, through which dead letters are replayed
            write=rf"^({events}|{any_queue}|amq\.default)$",
            read=rf"^({events}|{failures}|{any_queue})$",
            topic_write=NOTHING,
            topic_read=".*",
            tags="management",
        ),
        # What reads queue lengths from the management API (KEDA): nothing on AMQP.
        BrokerUser(
            role="monitor", configure=NOTHING, write=NOTHING, read=NOTHING, tags="monitoring"
        ),
    )


USERS = users()


def user(role: str, namespace: str | None = None) -> BrokerUser:
    for u in users(namespace):
        if u.role == role:
            return u
    raise ValueError(f"unknown broker role {role!r}; one of {', '.join(u.role for u in USERS)}")


def user_name(role: str, prefix: str = "mailintake") -> str:
    """The RabbitMQ user of `role`, e.g. mailintake-binder."""
    return f"{prefix}-{user(role).role}"


def failure_keys(namespace: str, stages: tuple[str, ...]) -> str:
    """The routing keys `stages` may send on `namespace`'s failures exchange: their own
    `.retry` and `.dlq` queues' names (nothing for no stages)."""
    if not stages:
        return NOTHING
    ns = re.escape(namespace)
    return rf"^{ns}\.({'|'.join(stages)})\.in\.(retry|dlq)$"


def topic_rules(u: BrokerUser, namespace: str) -> list[tuple[str, str, str]]:
    """`u`'s topic rules in `namespace`: (exchange, write, read) for each of its exchanges."""
    topology = Topology(namespace)
    return [
        (topology.exchange, u.topic_write, u.topic_read),
        (topology.failures_exchange, failure_keys(namespace, u.failures_of), u.topic_read),
    ]


def rules_lines(prefix: str = "mailintake") -> str:
    """One line per user, tab-separated: name, tags, configure, write, read (what lib.sh hands
    to rabbitmqctl; the patterns fit every namespace)."""
    rows = [[user_name(u.role, prefix), u.tags or "-", u.configure, u.write, u.read] for u in USERS]
    return "".join("\t".join(row) + "\n" for row in rows)


def topic_rules_lines(namespace: str = "mailintake", prefix: str = "mailintake") -> str:
    """One line per user and exchange of `namespace`, tab-separated: name, exchange, topic
    write, topic read."""
    rows = [[user_name(u.role, prefix), *rule] for u in USERS for rule in topic_rules(u, namespace)]
    return "".join("\t".join(row) + "\n" for row in rows)


def apply(
    management_url: str,
    passwords: dict[str, str],
    *,
    namespace: str,
    vhost: str = "/",
    prefix: str = "mailintake",
) -> list[str]:
    """Create or update the users of `passwords` (role -> password) and their rules, on
    `namespace`'s exchanges and queues only (and its topic rules), through the RabbitMQ
    management API at `management_url` (an administrator's); the user names."""
    done = []
    for role, password in passwords.items():
        u, name = user(role, namespace), user_name(role, prefix)
        _put(management_url, f"users/{_q(name)}", {"password": password, "tags": u.tags})
        rules = {"configure": u.configure, "write": u.write, "read": u.read}
        _put(management_url, f"permissions/{_q(vhost)}/{_q(name)}", rules)
        for exchange, write, read in topic_rules(u, namespace):
            topic = {"exchange": exchange, "write": write, "read": read}
            _put(management_url, f"topic-permissions/{_q(vhost)}/{_q(name)}", topic)
        done.append(name)
    return done


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _put(management_url: str, path: str, body: dict[str, str]) -> None:
    parts = urllib.parse.urlsplit(management_url)
    host = f"{parts.hostname or ''}:{parts.port}" if parts.port else parts.hostname or ""
    base = parts._replace(netloc=host)
    request = urllib.request.Request(
        f"{base.geturl().rstrip('/')}/api/{path}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    user_pass = f"{parts.username or ''}:{parts.password or ''}"
    auth = urllib.parse.unquote(user_pass).encode()
    request.add_header("authorization", "Basic " + base64.b64encode(auth).decode())
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise RuntimeError(f"RabbitMQ refused PUT /api/{path}: HTTP {exc.code} {detail}") from exc


def main(argv: list[str]) -> int:
    """`rules`, `topic-rules`: print the rules; `apply`: create the users whose password is in
    the environment (MAILINTAKE_BROKER_PASSWORD_<ROLE>) with MAILINTAKE_RABBITMQ_ADMIN_URL,
    then declare the topology as the operator (MAILINTAKE_AMQP_URL_OPERATOR)."""
    if argv[1:] == ["rules"]:
        sys.stdout.write(rules_lines())
        return 0
    if argv[1:2] == ["topic-rules"] and len(argv) <= 3:
        sys.stdout.write(topic_rules_lines(*argv[2:3]))
        return 0
    if argv[1:] == ["apply"]:
        return _apply_from_env()
    usage = "usage: python -m shared.brokeraccess rules | topic-rules [NAMESPACE] | apply"
    print(usage, file=sys.stderr)
    return 2


def _apply_from_env() -> int:
    admin = os.environ.get("MAILINTAKE_RABBITMQ_ADMIN_URL")
    if not admin:
        print("MAILINTAKE_RABBITMQ_ADMIN_URL is not set", file=sys.stderr)
        return 2
    passwords = {
        u.role: os.environ[f"MAILINTAKE_BROKER_PASSWORD_{u.role.upper()}"]
        for u in USERS
        if os.environ.get(f"MAILINTAKE_BROKER_PASSWORD_{u.role.upper()}")
    }
    vhost = os.environ.get("MAILINTAKE_RABBITMQ_VHOST", "/")
    namespace = os.environ.get("MAILINTAKE_NAMESPACE", "mailintake")
    done = apply(admin, passwords, namespace=namespace, vhost=vhost)
    print("broker users:", ", ".join(done) or "none")
    operator = os.environ.get(user("operator").env)
    if operator:  # the stages' own settings: the same namespace and delivery limit
        from shared.messaging import Broker
        from shared.settings import Settings
        from shared.topology import Topology

        settings = Settings()
        broker = Broker(operator, Topology(settings.namespace, settings.delivery_limit))
        broker.declare()
        broker.close()
        print(f"topology declared: {settings.namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
