"""`mailintake`: the entry point; each noun's commands live in their own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ops import accounts, crm, demo, listings, run
from ops.context import Context
from ops.output import UserError
from shared.errors import ConfigError, MailintakeError

MODULES = (accounts, crm, listings, run, demo)

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
    try:
        return int(args.func(args, Context()) or EXIT_OK)
    except (UserError, ConfigError) as exc:
        print(f"mailintake: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MailintakeError as exc:
        print(f"mailintake: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
