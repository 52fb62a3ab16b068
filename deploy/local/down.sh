#!/usr/bin/env bash
# Stop the local services started by up.sh. Idempotent; keeps the state dir.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
take_lock
for svc in ferretdb dovecot rabbitmq; do
    service_down "$svc"
done
