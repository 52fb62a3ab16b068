#!/usr/bin/env bash
# Control one local service: ctl.sh rabbitmq|dovecot|ferretdb start|stop|restart|status
#   start    start it if it is not running (waits until it serves)
#   stop     stop it and wait until it has exited
#   restart  stop, then start
#   status   print its state; exit 0 running, 1 starting/unhealthy, 3 stopped
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    echo "usage: $0 rabbitmq|dovecot|ferretdb start|stop|restart|status" >&2
    exit 2
}

[ $# -eq 2 ] || usage
svc=$1
action=$2
check_service "$svc"

case $action in
    status)
        "${svc}_status"
        ;;
    start)
        require_root
        take_lock
        ensure_base
        service_up "$svc"
        ;;
    stop)
        require_root
        take_lock
        service_down "$svc"
        ;;
    restart)
        require_root
        take_lock
        ensure_base
        service_down "$svc"
        service_up "$svc"
        ;;
    *)
        usage
        ;;
esac
