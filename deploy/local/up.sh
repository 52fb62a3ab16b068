#!/usr/bin/env bash
# Install (when missing) and start the local services on 127.0.0.1, then write
# $MAILINTAKE_LOCAL_DIR/env.sh (default /var/tmp/mailintake-local/env.sh).
# Idempotent: services already running are left alone.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
t0=$EPOCHREALTIME
ensure_packages
take_lock
ensure_base
say "base: ok ($(since "$t0"))"

for svc in $SERVICES; do
    service_up "$svc"
done

rabbitmq_users
say "rabbitmq users: $BROKER_ROLES ($(since "$t0"))"

write_env_file
say "env: . $STATE/env.sh (total $(since "$t0"))"
