"""`mailintake`: the entry point; each noun's commands live in their own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ops import (
    accounts,
    crm,
    demo,
    dlq,
    listings,
    managers,
    queues,
    run,
    secrets,
    tokens,
    webhooks,
)
from ops.context import Context
from ops.output import UserError
from shared.errors import ConfigError, MailintakeError
from shared.logging import configure_logging

MODULES = (accounts, crm, listings, managers, webhooks, queues, dlq, secrets, tokens, run, demo)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailintake",
        description="Incoming-mail intake for a CRM: fetch mailboxes, bind mail to orders and "
        "customers, assign new customers to managers, notify them.",
        epilog="Services are found through MAILINTAKE_AMQP_URL, MAILINTAKE_MONGO_URL and "
        "MAILINTAKE_SECRET_KEY. Run `mailintake COMMAND --help` for each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("console", "ERROR")  # a command says what went wrong in its one line
    logging.getLogger().setLevel(logging.CRITICAL)  # pika logs each failed connect attempt
    ctx: Context | None = None
    try:
        ctx = Context()
        return int(args.func(args, ctx) or EXIT_OK)
    except (UserError, ConfigError) as exc:
        print(f"mailintake: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MailintakeError as exc:
        print(f"mailintake: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
